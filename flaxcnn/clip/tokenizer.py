"""CLIP's byte-pair-encoding tokenizer (Radford et al. 2021, "Learning Transferable Visual
Models From Natural Language Supervision"), without torch.

It reproduces OpenAI's ``clip.simple_tokenizer`` and ``clip.tokenize`` id for id: the same
49,152-entry BPE vocabulary (``flaxcnn/_data/bpe_simple_vocab_16e6.txt.gz``, shipped by
OpenAI's CLIP under the MIT license, ``flaxcnn/_data/LICENSE_openai_clip.txt``), the same
text cleaning (``ftfy.fix_text``, HTML unescaped twice, whitespace collapsed, lower-cased)
and the same pre-tokenising regular expression.

That expression uses the ``regex`` package's Unicode classes ``\\p{L}``, ``\\p{N}`` and
``\\s`` with ``IGNORECASE`` (under which an apostrophe and U+017F, the long s, still match
the contraction ``'s``). It is compiled with ``regex`` here too rather than rebuilt from
:mod:`unicodedata`: Python's Unicode tables lag the ones ``regex`` bundles, and every
character assigned in between would split differently from OpenAI's tokenizer. ``ftfy``
and ``regex`` are the ``[clip]`` extra and are imported on first use, so ``import flaxcnn``
needs neither.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BPE_PATH", "SimpleTokenizer", "tokenize"]

BPE_PATH = Path(__file__).resolve().parent.parent / "_data" / "bpe_simple_vocab_16e6.txt.gz"
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
# OpenAI uses the file's first 48,894 merges: with the 256 byte symbols, the same 256 ending
# a word and the 2 specials, 49,408 ids (the text tower's vocabulary).
_NUM_MERGES = 48_894
_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"CLIP's tokenizer needs the {module!r} package: pip install 'flaxcnn[clip]'"
        ) from e


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes map to themselves; the rest (controls, space) to code points
    from 256 on, so BPE symbols never contain whitespace or control characters.
    """
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs = bs[:]
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + len(cs) - 188)  # 188 printable bytes precede: 256, 257, ...
    return dict(zip(bs, map(chr, cs), strict=True))


class SimpleTokenizer:
    """OpenAI's CLIP BPE tokenizer: :meth:`encode` text to ids, :meth:`decode` ids to text.

    Args:
      bpe_path: the gzipped merges file (default: OpenAI's, shipped with flaxcnn).
      cache_size: how many distinct words keep their BPE split memoised.
    """

    def __init__(self, bpe_path: str | Path = BPE_PATH, *, cache_size: int = 1 << 16):
        re = _require("regex")
        self.byte_encoder = _bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        symbols = list(self.byte_encoder.values())
        vocab = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
        vocab += [SOT, EOT]
        # dict(zip(...)) as OpenAI builds them: a repeated entry would keep its last index.
        self.encoder: dict[str, int] = dict(zip(vocab, range(len(vocab)), strict=True))
        self.decoder: dict[int, str] = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks: dict[tuple[str, ...], int] = dict(
            zip(merges, range(len(merges)), strict=True)
        )
        self.sot_token_id, self.eot_token_id = self.encoder[SOT], self.encoder[EOT]
        self.vocab_size = len(self.encoder)
        self._pat = re.compile(_PATTERN, re.IGNORECASE)
        self._space = re.compile(r"\s+")
        self._bpe = functools.lru_cache(maxsize=cache_size)(self._bpe_uncached)

    def clean(self, text: str) -> str:
        """OpenAI's cleaning: ftfy, HTML entities unescaped twice, whitespace runs to one
        space, stripped, lower-cased."""
        text = _require("ftfy").fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        return self._space.sub(" ", text).strip().lower()

    def _bpe_uncached(self, token: str) -> tuple[str, ...]:
        """Byte-pair merges of one pre-token: repeatedly join every occurrence (left to
        right, not overlapping) of the lowest-ranked adjacent pair, until none is ranked."""
        if token in (SOT, EOT):
            return (token,)
        word = (*token[:-1], token[-1] + "</w>")
        ranks = self.bpe_ranks
        while len(word) > 1:
            pairs = set(itertools.pairwise(word))
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without the start- and end-of-text tokens."""
        ids: list[int] = []
        for token in self._pat.findall(self.clean(text)):
            symbols = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._bpe(symbols))
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids`` as OpenAI decodes it: a space after every word, undecodable
        bytes replaced; special tokens appear as ``<|startoftext|>``/``<|endoftext|>``."""
        text = "".join(self.decoder[int(i)] for i in ids)
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")


@functools.cache
def default_tokenizer() -> SimpleTokenizer:
    """The shared :class:`SimpleTokenizer` over OpenAI's vocabulary (built on first use)."""
    return SimpleTokenizer()


def _preview(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _as_str_list(texts: Any) -> list[str]:
    bad = texts
    if not isinstance(texts, bytes):
        try:
            texts = list(texts)
        except TypeError:
            pass
        else:
            bad = next((t for t in texts if not isinstance(t, str)), None)
            if bad is None:
                return texts
    raise TypeError(f"expected a string or a sequence of strings, got {type(bad).__name__}")


def tokenize(
    texts: str | Sequence[str], context_length: int = 77, truncate: bool = False
) -> np.ndarray:
    """Token ids of ``texts`` as OpenAI's ``clip.tokenize`` gives them, as a numpy array.

    Each row is ``<|startoftext|>`` (49406), the text's BPE ids, ``<|endoftext|>`` (49407),
    then zeros up to ``context_length`` (77 for every released CLIP). The text encoder
    pools the features at the end-of-text token, the row's largest id.

    Args:
      texts: one string or a sequence of strings.
      context_length: the row length.
      truncate: cut texts that do not fit, ending the row with ``<|endoftext|>`` as OpenAI
        does; otherwise they raise :class:`RuntimeError` (OpenAI's error type).

    Returns:
      ``int32`` array of shape ``(len(texts), context_length)``: the dtype OpenAI's
      ``clip.tokenize`` returns on torch >= 1.8 (``IntTensor``) and JAX's default integer.
      (The ``clip-anytorch`` and ``open_clip`` packages return int64; the ids are the same
      and all below 2**16.)
    """
    texts = [texts] if isinstance(texts, str) else _as_str_list(texts)
    if context_length < 2:
        raise ValueError(
            f"context_length must leave room for the start and end tokens, got {context_length}"
        )
    tok = default_tokenizer()
    out = np.zeros((len(texts), context_length), np.int32)
    for i, text in enumerate(texts):
        ids = [tok.sot_token_id, *tok.encode(text), tok.eot_token_id]
        if len(ids) > context_length:
            if not truncate:
                raise RuntimeError(
                    f"input {i} ({_preview(text)}) is {len(ids)} tokens, more than the context "
                    f"length {context_length}; pass truncate=True to cut it"
                )
            ids = [*ids[: context_length - 1], tok.eot_token_id]
        out[i, : len(ids)] = ids
    return out
