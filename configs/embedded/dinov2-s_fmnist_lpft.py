# DEPRECATED name, kept working: use dinov2-s_ft_1xb8-300it_fmnist-56px.py (every
# fine-tuning config of this task starts from the LP checkpoint, so its FT is LP-FT).
_base_ = ['./dinov2-s_ft_1xb8-300it_fmnist-56px.py']
