"""A byte-level BPE tokenizer trained with `tokenizers` on a pretraining corpus.

Byte-level means every string round-trips exactly (no unknown token, whitespace and tabs kept),
as GPT-2's does. The result is wrapped as a `PreTrainedTokenizerFast` with `<|bos|>`, `<|eos|>`
and `<|pad|>` (encoding prepends `<|bos|>`), so `save_pretrained` writes ordinary
`tokenizer.json` files that `AutoTokenizer` reloads offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from brushpen.errors import BadParameter, BrokenModel

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, EOS, PAD]
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # every byte plus the special tokens


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512,
                    model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """Train byte-level BPE merges on texts, up to vocab_size entries in all."""
    if vocab_size < MIN_VOCAB:
        raise BadParameter(f"vocab_size must be at least {MIN_VOCAB} (256 bytes + special tokens)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    # `tokenizer(text)` starts with <|bos|>, as the training stream does, so a prompt looks like a
    # document start to the model.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return wrap(tok, model_max_length)


def wrap(tok: Tokenizer, model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, model_max_length=model_max_length,
                                   clean_up_tokenization_spaces=False)


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved in a model folder, offline."""
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise BrokenModel(f"no readable tokenizer in {folder}: {e}") from e
