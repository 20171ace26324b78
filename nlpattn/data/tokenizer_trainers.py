"""How each tokenizer kind is trained (used by `nlpattn.tokenizer.train_tokenizer`).

Each trainer takes the TokenizerConfig, an iterable of texts (lines with their "\\n") and the
special tokens in id order, and returns a backend for `nlpattn.tokenizer.Tokenizer`. The special
tokens always take the first ids, in the order given.
"""
from __future__ import annotations

import collections
import io
import os
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from nlpattn.config import TokenizerConfig
from nlpattn.errors import ConfigError

if TYPE_CHECKING:
    from nlpattn.tokenizer import _HFBackend, _SPBackend


def _hf_tokenizer(model, normalizer, pre_tokenizer, decoder):
    from tokenizers import Tokenizer

    tok = Tokenizer(model)
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoder
    return tok


def _finish(tok, texts: Iterable[str], trainer, specials: list[str], bert_template: bool = False,
            after_training: Callable | None = None) -> "_HFBackend":
    from tokenizers import Tokenizer, processors

    from nlpattn.tokenizer import _HFBackend

    tok.train_from_iterator(texts, trainer)
    if after_training is not None:
        after_training(tok, specials)
    tok.add_special_tokens(specials)  # already in the vocab: marks them as special (never split)
    if bert_template:  # what transformers adds around texts; our wrapper adds specials itself
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    # Re-read the serialised form so the trained object equals the saved one to the last float bit.
    return _HFBackend(Tokenizer.from_str(tok.to_str()))


def train_bpe(cfg: TokenizerConfig, texts: Iterable[str], specials: list[str]) -> "_HFBackend":
    """GPT-2 style byte-level BPE (no prefix space; every byte is in the alphabet)."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if cfg.vocab_size < len(specials) + len(alphabet):
        raise ConfigError(f"tokenizer.vocab_size={cfg.vocab_size} is too small for byte-level BPE: "
                          f"needs >= {len(specials) + len(alphabet)} ({len(specials)} specials + 256 bytes)")
    tok = _hf_tokenizer(models.BPE(), normalizers.Lowercase() if cfg.lowercase else None,
                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
                        decoders.ByteLevel())
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                  special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    return _finish(tok, texts, trainer, specials)


def train_wordpiece(cfg: TokenizerConfig, texts: Iterable[str], specials: list[str]) -> "_HFBackend":
    """BERT style WordPiece: BERT normalizer and pre-tokenizer, `##` continuations."""
    from tokenizers import decoders, normalizers, pre_tokenizers, trainers

    tok = _hf_tokenizer(_wordpiece_model(),
                        normalizers.BertNormalizer(lowercase=cfg.lowercase, strip_accents=cfg.lowercase),
                        pre_tokenizers.BertPreTokenizer(), decoders.WordPiece(cleanup=False))
    trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                        special_tokens=specials, show_progress=False)
    return _finish(tok, texts, trainer, specials, bert_template=True, after_training=_fixed_wordpiece_ids)


def _wordpiece_model(vocab: dict[str, int] | None = None):
    """An (untrained, or given-vocabulary) WordPiece model with our [UNK] and word-length limit."""
    from tokenizers import models

    return models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)


def _fixed_wordpiece_ids(tok, specials: list[str]) -> None:
    """Renumber a trained WordPiece vocabulary in a fixed order: specials, then shortest first.

    The trainer breaks frequency ties in hash order, so the same text gave different ids from
    run to run, and with them a different model (embedding rows) for the same seed. WordPiece
    splits by longest match over the vocabulary, so the ids themselves change no tokenization.
    """
    rest = sorted((t for t in tok.get_vocab() if t not in specials),
                  key=lambda t: (len(t.removeprefix("##")), t.startswith("##"), t))
    vocab = {token: i for i, token in enumerate([*specials, *rest])}
    tok.model = _wordpiece_model(vocab)


def train_unigram(cfg: TokenizerConfig, texts: Iterable[str], specials: list[str]) -> "_HFBackend":
    """Unigram LM (Kudo 2018) on `▁`-marked words, no dummy prefix: exact round trips."""
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    tok = _hf_tokenizer(models.Unigram(), normalizers.Lowercase() if cfg.lowercase else None,
                        pre_tokenizers.Metaspace(prepend_scheme="never"),
                        decoders.Metaspace(prepend_scheme="never"))
    trainer = trainers.UnigramTrainer(vocab_size=cfg.vocab_size, special_tokens=specials,
                                      unk_token="[UNK]", show_progress=False)
    return _finish(tok, texts, trainer, specials)


def train_char(cfg: TokenizerConfig, texts: Iterable[str], specials: list[str]) -> "_HFBackend":
    """One token per character, most frequent first, up to `vocab_size` (the rest → [UNK])."""
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers

    from nlpattn.tokenizer import _HFBackend

    counts: collections.Counter = collections.Counter()
    for text in texts:
        counts.update(text.lower() if cfg.lowercase else text)
    chars = sorted((c for c in counts if c not in specials), key=lambda c: (-counts[c], c))
    vocab = {tok: i for i, tok in enumerate(specials)}
    for c in chars[: cfg.vocab_size - len(specials)]:
        vocab[c] = len(vocab)
    tok = _hf_tokenizer(models.WordLevel(vocab, unk_token="[UNK]"),
                        normalizers.Lowercase() if cfg.lowercase else None,
                        pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated"), decoders.Fuse())
    tok.add_special_tokens(specials)
    return _HFBackend(tok)


def _capture_errors(texts: Iterable[str], failure: list) -> Iterator[str]:
    """Yield from `texts`; an exception is stored in `failure` (sentencepiece would mangle it)."""
    try:
        yield from texts
    except Exception as e:  # noqa: BLE001 - re-raised by the caller
        failure.append(e)


def _train_sentencepiece(model_type: str) -> Callable:
    def train(cfg: TokenizerConfig, texts: Iterable[str], specials: list[str]) -> "_SPBackend":
        import sentencepiece as spm

        from nlpattn.tokenizer import _SPBackend

        proto, failure = io.BytesIO(), []
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_capture_errors(texts, failure), model_writer=proto, model_type=model_type,
                vocab_size=cfg.vocab_size, hard_vocab_limit=False, character_coverage=1.0,
                pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece=specials[0], unk_piece=specials[1],
                user_defined_symbols=[*specials[2:], "\n"], add_dummy_prefix=False,
                normalization_rule_name="nmt_nfkc_cf" if cfg.lowercase else "identity",
                remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
                max_sentence_length=cfg.max_sentence_length, num_threads=os.cpu_count() or 1,
                minloglevel=2)
        except RuntimeError as e:
            if failure:
                raise failure[0] from None
            raise ConfigError(f"tokenizer ({model_type} sentencepiece): "
                              f"{str(e).strip().splitlines()[-1]}") from None
        if failure:  # sentencepiece stops quietly when the iterator raises
            raise failure[0]
        return _SPBackend(proto.getvalue())

    train.__doc__ = f"sentencepiece {model_type} (identity normalisation, no dummy prefix, '\\n' kept)."
    return train


TRAINERS: dict[str, Callable] = {
    "bpe": train_bpe,
    "wordpiece": train_wordpiece,
    "unigram": train_unigram,
    "sentencepiece-unigram": _train_sentencepiece("unigram"),
    "sentencepiece-bpe": _train_sentencepiece("bpe"),
    "char": train_char,
}
