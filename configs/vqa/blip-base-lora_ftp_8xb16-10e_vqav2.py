# FTP on the LoRA adapters of BLIP-base, VQAv2 (anchor 0, k=1 as FRAMES-VQA's adamp_k=1).
_base_ = ['./_base_/blip-base-lora_vqav2.py', '../_base_/methods/ftp.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.0), accumulative_counts=2,
    ftp=dict(k=1.0, anchor='zero', exclude=[]))
