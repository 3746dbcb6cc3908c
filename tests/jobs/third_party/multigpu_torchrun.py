"""A torchrun DDP script that knows nothing of skyops, as researchers bring them.

Written for skyops' tests after the shape of pytorch/examples' torchrun tutorial script
(distributed/ddp-tutorial-series/multigpu_torchrun.py: `torchrun ... script.py TOTAL_EPOCHS SAVE_EVERY
[--batch_size N]`, torchrun's env for rank and rendezvous, a snapshot it resumes from, one progress line
per epoch per rank). The upstream file itself was run through skyops by hand (CPU-adapted), but code
brought in from a fetched snapshot is not committed here. On CPU: gloo, no device placement. No PEP 723
block, no HEARTBEAT_FILE: skyops' job kinds and output-based hang detection must handle it as it is.
"""

import argparse
import os

import torch
import torch.nn.functional as F
from datautils import MyTrainDataset
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler


class Trainer:
    def __init__(self, model, train_data, optimizer, save_every, snapshot_path):
        self.local_rank = int(os.environ["LOCAL_RANK"])
        self.train_data = train_data
        self.optimizer = optimizer
        self.save_every = save_every
        self.snapshot_path = snapshot_path
        self.epochs_run = 0
        if os.path.exists(snapshot_path):
            snapshot = torch.load(snapshot_path, map_location="cpu")
            model.load_state_dict(snapshot["MODEL_STATE"])
            self.epochs_run = snapshot["EPOCHS_RUN"]
            print(f"Resuming from the snapshot of epoch {self.epochs_run}")
        self.model = DDP(model)

    def train(self, max_epochs):
        for epoch in range(self.epochs_run, max_epochs):
            self.train_data.sampler.set_epoch(epoch)
            steps = 0
            for source, targets in self.train_data:
                self.optimizer.zero_grad()
                F.mse_loss(self.model(source), targets).backward()
                self.optimizer.step()
                steps += 1
            print(f"[rank {os.environ['RANK']}] epoch {epoch} | steps {steps}", flush=True)
            if self.local_rank == 0 and epoch % self.save_every == 0:
                torch.save(
                    {"MODEL_STATE": self.model.module.state_dict(), "EPOCHS_RUN": epoch + 1},
                    self.snapshot_path,
                )


def main(total_epochs, save_every, batch_size, snapshot_path="snapshot.pt"):
    init_process_group(backend="gloo")
    dataset = MyTrainDataset(2048)
    model = torch.nn.Linear(20, 1)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=DistributedSampler(dataset))
    Trainer(model, loader, torch.optim.SGD(model.parameters(), lr=1e-3), save_every, snapshot_path).train(
        total_epochs
    )
    destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a small distributed training job")
    parser.add_argument("total_epochs", type=int, help="epochs to train")
    parser.add_argument("save_every", type=int, help="epochs between snapshots")
    parser.add_argument("--batch_size", default=32, type=int, help="batch size per process")
    args = parser.parse_args()
    main(args.total_epochs, args.save_every, args.batch_size)
