"""The text family on Hugging Face `transformers`: base-model loading (`base`), copy prompts (`prompts`),
seeded sampling and streaming (`sampling`), the text blocklist (`filter`), and from-scratch
pretraining with its tokenizer (`pretrain`, `tokenizer`).
"""
