# DiGraP started constrained and relaxed (as FTP starts at the anchor): omega_init=1 with a small
# hyper-learning-rate mu, the paper's algorithm otherwise (docs/algorithm.md section 14.4).
_base_ = ['./digrap.py']
optim_wrapper = dict(digrap=dict(omega_init=1.0, mu=0.01))
