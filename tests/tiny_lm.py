"""A tiny real causal LM for loop tests: a byte-level BPE and a 2-layer GPT-2, trained for a few
seconds on the seed programs in the paper's prompt format, so it writes Flax-like code (mostly
copies and recombinations of the seeds). Useless as a NAS operator, real as a code path."""

from __future__ import annotations

from pathlib import Path

from evo.prompt import metrics_docstring, normalise_class
from evo.tasks.mnist1d.task import PRELUDE

SEEDS = Path(__file__).resolve().parents[1] / "seeds" / "mnist1d"


def corpus() -> list[str]:
    blocks = [metrics_docstring(1000 * (i + 1), 0.5 + 0.1 * i) + "\n" + normalise_class(p.read_text())
              for i, p in enumerate(sorted(SEEDS.glob("*.py")))]
    # Each training text: the prelude, then two examples, as a prompt would show them.
    return [PRELUDE + "\n\n" + a + "\n\n" + b + "\n" for a in blocks for b in blocks if a != b]


def build_tiny_lm(folder: Path, steps: int = 150, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    texts = corpus()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=len(hf_tok), n_positions=1024,
                                       bos_token_id=hf_tok.eos_token_id, eos_token_id=hf_tok.eos_token_id))
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
