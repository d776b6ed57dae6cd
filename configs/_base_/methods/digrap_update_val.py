# DiGraP variants 14.1 + 14.2 together (docs/algorithm.md, not the paper): the base update is
# projected (Adam cannot undo it) and omega, started at 1, is trained on held-out validation
# batches through the update-space hyper-gradient h_t = Norm(g_val, Q_{t-1}),
# Q = d theta / d omega.
_base_ = ['./digrap.py']
optim_wrapper = dict(digrap=dict(project='update', hypergrad_source='val', omega_init=1.0))
custom_hooks = [dict(type='RobustFTHook', log_interval=50),
                dict(type='DiGraPValHook', interval=1)]
