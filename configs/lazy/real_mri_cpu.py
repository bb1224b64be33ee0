"""The real-data recipe (the twin of real_mri_cpu.yaml): box-only Figshare slices, outlined
Br35H slices (mixed supervision) and tumor-free slices in one run, from scratch, each drawn by
its weight, on a CPU budget of about an hour on 2 cores. Prepare the sources with
tools/prepare_dataset.py (README, "Real data"): fold 0 tests, fold 1 chooses the operating
point, folds 2-4 train.
"""

from .quick_cpu import dataloader, lr_multiplier, model, optimizer, train, tumor

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train", "tumor"]

dataloader.train.names = tuple(f"{source}_fold{k}" for source in
                               ("figshare_boxes", "br35h", "tumor_free") for k in (2, 3, 4))
# Figshare boxes 1/2, Br35H outlines 1/4, tumor-free 1/4
dataloader.train.dataset_weights = (2, 2, 2, 1, 1, 1, 1, 1, 1)
dataloader.train.filter_empty = False
dataloader.train.num_workers = 1
dataloader.train.augment.contrast = (0.75, 1.33)
dataloader.train.augment.gamma = (0.7, 1.5)
dataloader.train.augment.bias_field = 0.3
dataloader.train.augment.noise_std = 0.03
dataloader.test.dataset.names = ["figshare_boxes_fold1", "br35h_fold1", "tumor_free_fold1"]
dataloader.evaluator.score_threshold = 0.5

lr_multiplier.warmup_iters = 200
lr_multiplier.steps = (2400, 2800)
train.max_iter = 3000
train.checkpointer.period = 500
train.eval_period = 0  # evaluated afterwards, per checkpoint (benchmarks/real_data.py)
train.output_dir = "output/lazy/real_mri_cpu"
