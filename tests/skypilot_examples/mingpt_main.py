"""A stand-in for pytorch/examples' distributed/minGPT-ddp `mingpt/main.py`, which SkyPilot's
distributed-pytorch examples (train.yaml, train-rdzv.yaml here) clone from GitHub at setup. Written for
skyops' tests, not copied: the same shape in a few seconds, offline, on CPU.

usage: torchrun --nnodes N --nproc_per_node P ... main.py   (setup copies it to examples/mingpt/main.py)

As minGPT-ddp does: one DDP process per GPU (gloo on CPU), torchrun's RANK, LOCAL_RANK and WORLD_SIZE,
a small GPT-like model trained on characters, "[GPU<rank>] Epoch ... | Train Loss ..." lines, and rank 0
saving `gpt_snapshot.pt` in the working directory. MINGPT_STEPS sets the number of steps (default 30).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

TEXT = (
    "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak. First Citizen: "
    "You are all resolved rather to die than to famish? All: Resolved. resolved. "
)
BLOCK = 16  # characters of context
BATCH = 8  # sequences per step and process


class TinyGPT(nn.Module):
    """Token and position embeddings, one causal self-attention block, a linear head."""

    def __init__(self, vocab: int, width: int = 32) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(BLOCK, width)
        self.block = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=2 * width, batch_first=True)
        self.head = nn.Linear(width, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(BLOCK))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.block(x, src_mask=self.mask, is_causal=True))


def main() -> None:
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world, local_rank = dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"])
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    torch.manual_seed(0)  # the same initial model on every rank (DDP broadcasts rank 0's anyway)
    chars = sorted(set(TEXT))
    data = torch.tensor([chars.index(c) for c in TEXT])
    model = TinyGPT(len(chars)).to(device)
    ddp = DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
    opt = torch.optim.AdamW(ddp.parameters(), lr=3e-3)
    sampler = torch.Generator().manual_seed(rank)  # each rank its own batches, as DistributedSampler
    steps = int(os.environ.get("MINGPT_STEPS", "30"))
    print(f"[GPU{rank}] world_size={world} backend={dist.get_backend()} steps={steps}", flush=True)
    for it in range(steps):
        starts = torch.randint(len(data) - BLOCK - 1, (BATCH,), generator=sampler)
        x = torch.stack([data[s : s + BLOCK] for s in starts]).to(device)
        y = torch.stack([data[s + 1 : s + BLOCK + 1] for s in starts]).to(device)
        loss = nn.functional.cross_entropy(ddp(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % 10 == 0 or it == steps - 1:
            print(f"[GPU{rank}] Epoch 0 | Iter {it} | Train Loss {loss.item():.5f}", flush=True)
    if rank == 0:
        torch.save({"MODEL_STATE": model.state_dict(), "EPOCHS_RUN": 1}, "gpt_snapshot.pt")
        print("Epoch 0 | Training snapshot saved at gpt_snapshot.pt", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
