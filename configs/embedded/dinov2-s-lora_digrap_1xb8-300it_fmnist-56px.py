# DiGraP on the LoRA adapters (r=8, alpha=16 on every block's attention qkv + proj; backbone
# and head frozen) from the linear-probe checkpoint, at the paper's VQA setting: anchor 0
# (d = theta for every adapter tensor: 0 is the start model), mu=0.5, nothing excluded.
# Knob: --cfg-options optim_wrapper.digrap.mu=0.1
_base_ = ['./_base_/dinov2-s-lora_fmnist-56px.py', '../_base_/methods/digrap.py']
optim_wrapper = dict(
    optimizer=dict(lr=1e-3, weight_decay=0.0),
    clip_grad=dict(max_norm=5.0),
    digrap=dict(mu=0.5, anchor='zero', exclude=[]))
test_evaluator = dict(type='IDOODAccuracy', tag='LoRA DiGraP (anchor 0, mu=0.5)')
