# SPD on the LoRA adapters of BLIP-base, VQAv2 (anchor 0, lambda 0.5 as the authors' adamh run).
_base_ = ['./_base_/blip-base-lora_vqav2.py', '../_base_/methods/spd.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.0), accumulative_counts=2,
    spd=dict(weight=0.5, anchor='zero', exclude=[]))
