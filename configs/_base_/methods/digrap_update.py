# DiGraP variant (docs/algorithm.md section 14.1, not the paper): project the base optimizer's
# UPDATE instead of the raw gradient. After Adam's step Delta, if <Delta, theta-theta0> > 0 the
# step loses omega times its radial part, so Adam's per-coordinate preconditioner cannot undo
# the projection. Here omega starts at 1 and stays there (fixed): the training-loss
# hyper-gradient asks for less projection whenever the gradient keeps conflicting (section
# 14.4), so a learned omega drifts to 0. For a learned omega use digrap_update_val.py.
# Knobs: --cfg-options optim_wrapper.digrap.omega_init=0.5
_base_ = ['./digrap.py']
optim_wrapper = dict(
    digrap=dict(project='update', omega_init=1.0, trainable=False))
