# L2-SP on the LoRA adapters of BLIP-base, VQAv2 (anchor 0 = plain coupled L2 on adapters).
_base_ = ['./_base_/blip-base-lora_vqav2.py', '../_base_/methods/l2sp.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.0), accumulative_counts=2,
    l2sp=dict(weight=1e-4, anchor='zero', exclude=[]))
