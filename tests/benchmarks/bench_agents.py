"""Learning machinery speed: population fitness (Eq 14), one greedy decision, one DQN update.

All figures come from one run on one machine, so their ratios compare like with like:

* ``fitness_vectorized_s_N50``: :func:`dcicore.population.td_fitness` of k individuals on J
  transitions (median of ``repeats``);
* ``fitness_loop_s_N50``: the plain reference :func:`dcicore.population.td_fitness_loop` (one
  individual at a time, torch-geometric GCN on the full padded graphs). It is a loop of k
  identical, independent steps, so it is timed on ``loop_individuals`` of them and scaled by
  k / loop_individuals (both numbers are reported); the two results are checked to agree;
* ``decision_ms_N50``: one greedy decision of :meth:`dcicore.dqn.DQNAgent.act` (observation ->
  graph -> Q-network -> masked argmax), median wall time over ``decisions`` states of an
  episode (``decision_cpu_ms_N50``: the same in process CPU time, less sensitive to other
  programs on a shared machine);
* ``update_ms_N50``: one gradient step of the DQN agent (sample J, double-DQN target, backward).

The replay is filled by the Greedy heuristic so that the states are realistic (many tasks in
flight). The process is set up with :func:`dcicore.nets.tune_cpu_runtime` (``threads`` torch
threads, glibc keeps freed blocks), as a training run should be.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _median_time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_agents(num_devices: int = 50, k: int = 50, J: int = 64, repeats: int = 3,
                 loop_individuals: int = 3, decisions: int = 50, threads: int | None = 1) -> dict:
    import torch

    from dcicore.baselines import make_policy
    from dcicore.config import SystemConfig
    from dcicore.dqn import DQNAgent
    from dcicore.env import DCIEnv
    from dcicore.nets import tune_cpu_runtime
    from dcicore.population import flatten_params, td_fitness, td_fitness_loop

    old_threads = torch.get_num_threads()
    tune_cpu_runtime(threads)
    try:
        tag = f"N{num_devices}"
        cfg = SystemConfig(num_devices=num_devices)
        agent = DQNAgent(cfg, batch_size=J, seed=0)
        env = DCIEnv(cfg)
        greedy = make_policy("Greedy")
        obs, _ = env.reset(seed=0)
        masks = env.action_masks()
        episode = 0
        for _ in range(2 * cfg.episode_slots):
            a = greedy(env)
            nxt, r, term, trunc, _ = env.step(a)
            nmasks = env.action_masks()
            agent.observe(obs, a, r, nxt, term, masks, nmasks)
            obs, masks = nxt, nmasks
            if trunc:
                episode += 1
                obs, _ = env.reset(seed=episode)
                masks = env.action_masks()
        tr = agent.replay.sample(J, rng=__import__("numpy").random.default_rng(0))
        net = agent.q_net.eval()
        gen = torch.Generator().manual_seed(0)
        base = flatten_params(net)
        thetas = base + 0.05 * torch.randn(k, base.numel(), generator=gen)
        targets = base + 0.05 * torch.randn(k, base.numel(), generator=gen)

        fit = None

        def vectorized():
            nonlocal fit
            fit = td_fitness(net, thetas, targets, tr, gamma=0.95, reward_scale=0.1)

        t_vec = _median_time(vectorized, repeats)
        n_loop = max(1, min(loop_individuals, k))
        t0 = time.perf_counter()
        fit_loop = td_fitness_loop(net, thetas[:n_loop], targets[:n_loop], tr, gamma=0.95, reward_scale=0.1)
        t_loop = (time.perf_counter() - t0) * k / n_loop
        diff = float((fit[:n_loop] - fit_loop).abs().max())

        # one greedy decision per state of an episode (the environment moves on between them)
        env = DCIEnv(cfg)
        obs, _ = env.reset(seed=123)
        times, cpu = [], []
        for _ in range(decisions + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            agent.act(env, obs, explore=False)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            obs, *_ = env.step(greedy(env))
        decision_ms = statistics.median(times[1:]) * 1e3
        decision_cpu_ms = statistics.median(cpu[1:]) * 1e3

        update_ms = _median_time(agent.update, repeats) * 1e3
        return {
            f"fitness_loop_s_{tag}": t_loop,
            f"fitness_vectorized_s_{tag}": t_vec,
            "fitness_speedup": t_loop / t_vec,
            "fitness_max_abs_diff": diff,
            "fitness_loop_individuals_timed": n_loop,
            f"decision_ms_{tag}": decision_ms,
            f"decision_cpu_ms_{tag}": decision_cpu_ms,
            f"update_ms_{tag}": update_ms,
            "agents_graph_rows_J": int(tr.graph.num_rows),
            "agents_ready_tasks_J": int(tr.graph.ready.sum()),
            "agents_torch_threads": torch.get_num_threads(),
        }
    finally:
        torch.set_num_threads(old_threads)


if __name__ == "__main__":
    for key, value in bench_agents().items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}", flush=True)
