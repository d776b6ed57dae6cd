# DEPRECATED name, kept working: use dinov2-s_l2sp_1xb8-300it_fmnist-56px.py.
_base_ = ['./dinov2-s_l2sp_1xb8-300it_fmnist-56px.py']
