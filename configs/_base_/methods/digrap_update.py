# DiGraP variant (docs/algorithm.md section 14.1, not the paper): project the base optimizer's
# UPDATE instead of the raw gradient. After Adam's step Delta, if <Delta, theta-theta0> > 0 the
# step loses omega times its radial part, so Adam's preconditioner cannot undo the projection.
# omega starts at 1 and is released slowly (mu=0.01): the training-loss hyper-gradient asks
# for less projection whenever the gradient keeps conflicting (section 14.4), so a fast mu
# drops it to 0 within a few dozen steps.
# Measured on digits (docs/analysis/digrap_dynamics.md, 5 seeds): mean OOD +1.9 [+0.4, +3.5]
# vs FT, ID -0.5. A fixed omega=1 (trainable=False) constrains more: OOD +4.3, ID -2.7.
# Knobs: --cfg-options optim_wrapper.digrap.mu=0.05 optim_wrapper.digrap.trainable=False
_base_ = ['./digrap.py']
optim_wrapper = dict(digrap=dict(project='update', omega_init=1.0, mu=0.01))
