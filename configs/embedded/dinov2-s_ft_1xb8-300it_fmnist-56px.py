# Vanilla fine-tuning (AdamW) from the linear-probe checkpoint (= LP-FT).
# Knob: --cfg-options optim_wrapper.optimizer.lr=1e-5
_base_ = ['./_base_/dinov2-s_fmnist-56px.py', '../_base_/methods/ft.py']
optim_wrapper = dict(
    optimizer=dict(lr=3e-5, weight_decay=0.0),
    clip_grad=dict(max_norm=5.0))
test_evaluator = dict(type='IDOODAccuracy', tag='FT (AdamW)')
