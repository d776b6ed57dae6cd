"""tools/benchmark/compare_methods.py: the plan covers every method, fairly (no training)."""
import os.path as osp
import subprocess
import sys
from importlib.util import module_from_spec, spec_from_file_location

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPT = osp.join(ROOT, 'tools', 'benchmark', 'compare_methods.py')


@pytest.fixture(scope='module')
def cm():
    spec = spec_from_file_location('compare_methods', SCRIPT)
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


EXPECTED = {'ft', 'l2sp', 'ftp', 'spd', 'tpgm', 'lpft', 'wise', 'digrap', 'fixed0.5', 'fixed1',
            *(f'digrap_mu{m}_w{w}' for m in ('0.1', '10') for w in ('0', '1')),
            'digrap_mu0.5_w1'}


def _opts(cmd):
    return cmd[cmd.index('--cfg-options') + 1:]


def test_dry_run_covers_every_method_with_identical_common_overrides(cm, capsys):
    plan = cm.main(['--dry-run', '--seeds', '0,1'])
    out = capsys.readouterr().out
    assert set(cm.METHODS) == EXPECTED
    reported = {(m, c['seed']) for c in plan for m in c['methods']}
    assert reported == {(m, s) for m in EXPECTED for s in (0, 1)}
    assert 'tools/train.py' in out and 'tools/test.py' in out and 'tools/wise_ft.py' in out
    for seed in (0, 1):
        steps = [s for c in plan if c['seed'] == seed for s in c['steps']]
        commons = {tuple(s['common']) for s in steps}
        assert len(commons) == 1, 'every run of a seed must share the same non-method options'
        common = list(commons.pop())
        assert f'randomness.seed={seed}' in common
        for s in steps:
            opts = _opts(s['cmd'])
            # the command line = the shared overrides, then only the method's own knobs
            assert opts[:len(common)] == common and opts[len(common):] == s['method_opts']
            for o in s['method_opts']:
                assert o.startswith(('optim_wrapper.', 'load_from=')), o
            assert s['config'].startswith('configs/embedded/dinov2-s_fmnist_')
            assert osp.isfile(osp.join(ROOT, s['config']))
    # seeds differ only in the seed
    c0 = [o for o in plan[0]['steps'][0]['common'] if not o.startswith('randomness.seed')]
    c1 = [o for o in plan[-1]['steps'][0]['common'] if not o.startswith('randomness.seed')]
    assert c0 == c1


def test_method_specific_steps(cm):
    args = cm.parse_args(['--dry-run', '--seeds', '0'])
    by = {c['name']: c for c in cm.build_plan(args)}
    # WiSE-FT rides on the FT run of its seed: post-hoc on FT's checkpoint, alpha on val
    assert by['ft']['methods'] == ['ft', 'wise'] and 'wise' not in by
    kinds = [(s['kind'], s['owner']) for s in by['ft']['steps']]
    assert kinds == [('train', 'ft'), ('test', 'ft'), ('wise', 'wise')]
    wise = by['ft']['steps'][2]['cmd']
    assert '--select-on' in wise and wise[wise.index('--select-on') + 1] == 'val'
    assert '{ckpt:%s}' % by['ft']['steps'][0]['work_dir'] in wise
    # LP-FT: LP (frozen backbone) then FT from the LP checkpoint, then the test
    lpft = by['lpft']['steps']
    assert [(s['kind'], s['stage']) for s in lpft] == [('train', 'lp'), ('train', 'ft'),
                                                       ('test', 'ft')]
    assert lpft[0]['config'].endswith('_lp.py') and lpft[1]['config'].endswith('_lpft.py')
    assert lpft[1]['method_opts'] == ['load_from={ckpt:%s}' % lpft[0]['work_dir']]
    # the test gets the LP-FT checkpoint; a load_from option would override it (test.py)
    assert lpft[2]['cmd'][3] == '{ckpt:%s}' % lpft[1]['work_dir']
    assert not any(o.startswith('load_from') for o in _opts(lpft[2]['cmd']))
    # the DiGraP sweep and the fixed-omega ablation only change optimizer knobs
    assert by['digrap']['steps'][0]['method_opts'] == ['optim_wrapper.digrap.mu=0.5',
                                                       'optim_wrapper.digrap.omega_init=0.0']
    assert by['digrap_mu10_w1']['steps'][0]['method_opts'] == [
        'optim_wrapper.digrap.mu=10', 'optim_wrapper.digrap.omega_init=1.0']
    assert by['fixed0.5']['steps'][0]['config'].endswith('_digrap-fixed.py')
    assert by['fixed0.5']['steps'][0]['method_opts'] == ['optim_wrapper.digrap.omega=0.5']
    # wise without ft trains its own FT run (not reported)
    args = cm.parse_args(['--dry-run', '--methods', 'wise', '--seeds', '3'])
    (chain,) = cm.build_plan(args)
    assert chain['methods'] == ['wise']
    assert [(s['kind'], s['owner']) for s in chain['steps']] == [('train', None),
                                                                  ('wise', 'wise')]


def test_quick_and_cli(cm):
    args = cm.parse_args(['--quick'])
    assert args.seed_list == [0] and args.method_list == ['ft', 'digrap', 'wise']
    assert args.train_subset < cm.DEFAULTS['train_subset']
    out = subprocess.run([sys.executable, SCRIPT, '--dry-run', '--methods', 'spd,lpft',
                          '--seeds', '4'], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('tools/train.py') == 3 and 'randomness.seed=4' in out.stdout
    bad = subprocess.run([sys.executable, SCRIPT, '--dry-run', '--methods', 'nope'],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode != 0 and 'unknown method' in bad.stderr


def test_aggregate_and_markdown(cm, tmp_path):
    def res(id_, noise, blur):
        return dict(id=id_, ood_mean=(noise + blur) / 2, ood_worst=min(noise, blur),
                    groups={'noise': dict(mean=noise), 'blur': dict(mean=blur)},
                    sets=[dict(name='id', accuracy=id_), dict(name='noise_s3', accuracy=noise),
                          dict(name='blur_s3', accuracy=blur)])
    recs = [dict(method='digrap', seed=s, label='DiGraP', results=res(80 + s, 50, 60 + s),
                 wall_time_s=60.0, peak_rss_mib=1000.0, omega=0.1 * (s + 1))
            for s in (0, 1)]
    recs.append(dict(method='ft', seed=0, label='FT', error='boom'))
    agg = cm.aggregate(recs)
    assert list(agg) == ['digrap']
    assert agg['digrap']['id'][0] == pytest.approx(80.5)
    assert agg['digrap']['id'][1] == pytest.approx(0.5 ** 0.5)
    assert agg['digrap']['omega'][0] == pytest.approx(0.15)
    args = cm.parse_args(['--seeds', '0,1'])
    md = cm.markdown(agg, recs, args, 'cmd', dict(cpu='cpu', cores=2), 61.0)
    assert '| DiGraP | 2 | 80.50 ± 0.71 |' in md and 'Failed runs' in md and 'boom' in md
    cm.plot(agg, str(tmp_path / 'p.png'), 't')
    assert (tmp_path / 'p.png').stat().st_size > 1000
