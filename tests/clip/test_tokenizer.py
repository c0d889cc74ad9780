"""flaxcnn.clip.tokenize gives the ids of OpenAI's clip.tokenize (and open_clip's, where
open_clip's tokenizer agrees with OpenAI's), on a few hundred generated strings."""

# ruff: noqa: RUF001  (look-alike characters are the point of this test data)

import random
import subprocess
import sys
import warnings

import numpy as np
import pytest

from flaxcnn.clip import SimpleTokenizer, tokenize
from flaxcnn.clip.tokenizer import default_tokenizer

with warnings.catch_warnings():  # clip imports pkg_resources, deprecated in setuptools
    warnings.simplefilter("ignore")
    import clip
import open_clip

EOT, SOT = 49407, 49406


def _mojibake(s: str) -> str:
    """UTF-8 read as Windows-1252: the damage ftfy.fix_text repairs."""
    return s.encode("utf-8").decode("cp1252", errors="replace")


FRAGMENTS = {
    "ascii": ["a", "photo", "of", "the", "Cat", "DOG", "chainsaw", "Santa", "Claus", "x"],
    "accents": ["café", "naïve", "résumé", "Straße", "Øresund", "İstanbul", "Ångström", "ſ"],
    "cjk": ["東京タワー", "日本語", "中文字符", "한국어", "ｆｕｌｌｗｉｄｔｈ", "〜"],
    "scripts": ["مرحبا", "שלום", "Привет", "Ελληνικά", "नमस्ते", "สวัสดี", "ሰላም"],
    "emoji": ["😀", "🐱‍👤", "👍🏽", "🇫🇷", "❤️", "🧑‍🚀", "☃", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"],
    "combining": ["e\u0301", "a\u0308o\u0308", "n\u0303", "i\u0307", "\u0301alone", "Z\u0336"],
    "numbers": ["3.14159", "1,000,000", "42", "½", "²", "٣٤", "Ⅻ", "１２３", "0x1F", "1e-9"],
    "punct": ["...", "!?", "—", "–", "«»", "“quoted”", "(a)", "[b]", "{c}", "@#$%^&*", "\\/|~`"],
    "html": ["&amp;", "&lt;b&gt;", "&quot;x&quot;", "&#39;", "&#x27;", "&amp;amp;", "&nbsp;"],
    "mojibake": [_mojibake(s) for s in ["café", "naïve", "“quotes”", "—dash", "über", "😀"]],
    "contractions": ["it's", "they're", "we've", "I'm", "you'll", "he'd", "don't", "IT'S"],
    "upper_contractions": ["THEY'RE", "WE'VE", "I'M", "YOU'LL", "HE'D", "DON'T", "'S", "'ſ"],
    "apostrophes": ["’s", "o'clock", "rock 'n' roll", "''", "'", "`t"],
    "misc": ["https://example.com/a?b=c", "user@mail.org", "C++", "snake_case", "a\x00b"],
}
SEPARATORS = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "", "-", "\x0b"]
EDGE_CASES = [
    "",
    " ",
    "\t\n \r",
    "a photo of a cat.",
    "A man with a gasoline saw is getting firewood",
    "it's 3:45pm, THEY'RE late!!!",
    "&amp;lt;b&amp;gt;bold&amp;lt;/b&amp;gt;",
    "â€œmojibakeâ€\x9d fixed",
    "word " * 75,  # exactly 77 tokens with start and end
    "word " * 76,  # one too many
    "supercalifragilisticexpialidocious" * 10,
    "😀" * 40,
    # OpenAI's special tokens spelled out in text (open_clip's are other strings)
    "<|startoftext|> hi <|EndOfText|>",
    "<start_of_text>x<end_of_text> </w>",
    # information separators: whitespace to str.split, not to regex's \s
    "a\x1cb\x1dc\x1ed\x1f e",
]


def _generate(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pools = list(FRAGMENTS.values())
    cases = [str.upper, str.lower, str.title, str.swapcase, lambda s: s]
    texts = []
    for _ in range(n):
        parts = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 12))]
        seps = [rng.choice(SEPARATORS) for _ in parts]
        text = "".join(p + s for p, s in zip(parts, seps, strict=True))
        text = rng.choice(cases)(text)
        if rng.random() < 0.2:
            text = rng.choice(SEPARATORS) + text + rng.choice(SEPARATORS)
        texts.append(text)
    return texts


TEXTS = EDGE_CASES + _generate(400)


def _disagree_with_openai(text: str) -> bool:
    """Where open_clip's tokenizer differs from OpenAI's by design: open_clip's special
    tokens are spelled <start_of_text>/<end_of_text> (and OpenAI's spellings are plain text
    to it), and it collapses whitespace with str.split, for which U+001C-U+001F are
    whitespace, not for the regex package's \\s."""
    low = text.lower()
    return (
        any(s in low for s in ("<|startoftext|>", "<|endoftext|>", "<start_of_text>"))
        or "<end_of_text>" in low
        or any(c in text for c in "\x1c\x1d\x1e\x1f")
    )


def _mismatches(got: np.ndarray, want: np.ndarray, texts: list[str]) -> list[str]:
    return [repr(t) for t, g, w in zip(texts, got, want, strict=True) if (g != w).any()]


def test_matches_openai():
    got = tokenize(TEXTS, truncate=True)
    want = clip.tokenize(TEXTS, truncate=True).numpy()
    assert got.shape == want.shape == (len(TEXTS), 77) and got.dtype == np.int32
    assert not _mismatches(got, want, TEXTS)
    # the generator did reach what it is meant to exercise
    assert (got == EOT).sum(1).min() >= 1 and (got[:, 0] == SOT).all()
    assert (got[:, -1] == EOT).sum() >= 3  # truncated rows
    assert len({tuple(r) for r in got}) > 0.9 * len(TEXTS)


def test_matches_open_clip_where_it_agrees():
    texts = [t for t in TEXTS if not _disagree_with_openai(t)]
    assert len(texts) == len(TEXTS) - 3
    got = tokenize(texts, truncate=True)  # open_clip always truncates
    assert not _mismatches(got, open_clip.tokenize(texts).numpy(), texts)


@pytest.mark.parametrize("context_length", [77, 16, 2])
def test_too_long_raises_unless_truncated(context_length):
    fits = "word " * (context_length - 2)
    too_long = fits + "word"
    assert (tokenize(fits, context_length)[0, -1]) == EOT
    for text in (too_long, too_long + " and more"):
        with pytest.raises(RuntimeError, match="too long"):
            clip.tokenize(text, context_length)
        with pytest.raises(RuntimeError, match=rf"more than the context length {context_length}"):
            tokenize(["ok", text], context_length)
        got = tokenize(text, context_length, truncate=True)
        np.testing.assert_array_equal(got, clip.tokenize(text, context_length, truncate=True))
        assert got[0, -1] == EOT


def test_single_string_empty_list_and_iterables():
    np.testing.assert_array_equal(tokenize("a cat"), tokenize(["a cat"]))
    np.testing.assert_array_equal(tokenize("a cat")[0, :4], [SOT, 320, 2368, EOT])
    assert tokenize([]).shape == (0, 77)
    np.testing.assert_array_equal(tokenize(("a", "b")), tokenize(np.array(["a", "b"])))


def test_encode_decode_as_openai():
    tok = default_tokenizer()
    ref = clip.simple_tokenizer.SimpleTokenizer()
    assert tok.vocab_size == len(ref.encoder) == 49408
    assert tok.encoder == ref.encoder and tok.bpe_ranks == ref.bpe_ranks
    for text in TEXTS[:60]:
        ids = tok.encode(text)
        assert ids == ref.encode(text)
        assert tok.decode(ids) == ref.decode(ids)
    assert tok.decode(tokenize("A Photo of a CAT!")[0, :8]) == (
        "<|startoftext|>a photo of a cat ! <|endoftext|>"
    )


def test_bad_inputs():
    with pytest.raises(TypeError, match="sequence of strings, got int"):
        tokenize(["a", 1])
    with pytest.raises(TypeError, match="got bytes"):
        tokenize(b"a cat")
    with pytest.raises(TypeError, match="got NoneType"):
        tokenize(None)
    with pytest.raises(ValueError, match="room for the start and end"):
        tokenize("a", context_length=1)


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ftfy", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'flaxcnn\[clip\]'"):
        tokenize("a cat")
    monkeypatch.setitem(sys.modules, "regex", None)
    with pytest.raises(ModuleNotFoundError, match=r"'regex'.*flaxcnn\[clip\]"):
        SimpleTokenizer()


def test_clip_package_does_not_import_torch():
    code = (
        "import sys, flaxcnn.clip; flaxcnn.clip.tokenize('a cat');"
        "print(sorted(m for m in ('torch', 'open_clip', 'clip') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
