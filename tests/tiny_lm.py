"""A tiny real causal LM for loop tests: a byte-level BPE and a 2-layer Llama (96 wide), trained
for ~20 s on the seed programs (and copies with other layer widths) in the paper's prompt format,
so it writes Flax code: mostly recombinations of the seeds, some of which train. Useless as a NAS
operator, real as a code path. (Rotary positions: a GPT-2 of the same size, with learned absolute
positions, wrote gibberish at the ~400-token offset where a prompt's child starts.)"""

from __future__ import annotations

import random
import re
from pathlib import Path

from evo.search.prompt import metrics_docstring, normalise_entry
from evo.tasks.mnist1d.task import PRELUDE

SEEDS = Path(__file__).resolve().parents[1] / "seeds" / "mnist1d"


def variants(code: str, rng: random.Random, count: int) -> list[str]:
    """The seed and ``count`` copies with other layer widths (one Conv width and one hidden Dense
    width per copy, so residual sums still match): teaches the tiny LM that widths vary, so it
    writes new working programs and not only copies of the seeds."""
    out = [code]
    for _ in range(count):
        conv, dense = rng.choice([8, 12, 16, 20, 32]), rng.choice([16, 32, 48, 64])
        varied = re.sub(r"nn\.Conv\(\d+", f"nn.Conv({conv}", code)
        out.append(re.sub(r"nn\.Dense\((?!10\))\d+", f"nn.Dense({dense}", varied))
    return out


def corpus(widths: int = 2, texts: int = 120) -> list[str]:
    rng = random.Random(0)
    codes = [v for p in sorted(SEEDS.glob("*.py")) for v in variants(p.read_text(), rng, widths)]
    blocks = [metrics_docstring(1000 * (i + 1), 0.5 + 0.05 * (i % 9)) + "\n" + normalise_entry(c)
              for i, c in enumerate(codes)]
    # Each training text: the prelude, then three examples: a prompt's two parents and a child.
    return [PRELUDE + "\n\n" + "\n\n".join(rng.sample(blocks, 3)) + "\n" for _ in range(texts)]


def build_tiny_lm(folder: Path, steps: int = 600, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    texts = corpus()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    model = LlamaForCausalLM(LlamaConfig(
        hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        vocab_size=len(hf_tok), max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=hf_tok.eos_token_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.eos_token_id))
    ids = [torch.tensor(hf_tok(t).input_ids[:1024]) for t in texts]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        x = ids[step % len(ids)].unsqueeze(0)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder
