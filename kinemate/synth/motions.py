"""A library of parameterised motions: joint-angle tracks as functions of time.

Every motion is a plain function ``motion(t, rng) -> (angles, params)``: ``t`` is the
frame times in seconds, shape (F,); ``rng`` draws the motion's random variation (speed,
amplitude, phase, which side, view angle, travel); ``angles`` maps every name of
:data:`kinemate.synth.body.ANGLES` to an array (F,) and ``params`` records what was drawn
(JSON-serialisable, kept in the clip's metadata). ``root_x`` is a horizontal travel in body
heights and ``root_dy`` a height above the ground (jumps); feet are otherwise pinned to the
floor by the renderer.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kinemate.synth.body import ANGLES, REST

MotionFn = Callable[[np.ndarray, np.random.Generator], tuple[dict, dict]]
MOTIONS: dict[str, MotionFn] = {}

TAU = 2.0 * np.pi


def motion(fn: MotionFn) -> MotionFn:
    MOTIONS[fn.__name__] = fn
    return fn


def _rest(t: np.ndarray) -> dict[str, np.ndarray]:
    return {name: np.full(len(t), REST[name], dtype=np.float64) for name in ANGLES}


def _front_yaw(rng: np.random.Generator, spread: float = 0.5) -> float:
    """A view angle near frontal (most real dance videos), sometimes three-quarter."""
    return float(rng.normal(0.0, spread * 0.5)) if rng.random() < 0.8 else float(
        rng.choice([-1, 1]) * rng.uniform(0.5, 1.0))


def _smooth_pulse(x: np.ndarray) -> np.ndarray:
    """0 -> 1 -> 0 over x in [0, 1] (raised cosine), 0 outside."""
    return np.where((x >= 0) & (x <= 1), 0.5 - 0.5 * np.cos(TAU * np.clip(x, 0, 1)), 0.0)


def _sway(a: dict, t: np.ndarray, rng: np.random.Generator, amp: float = 0.03) -> None:
    """Idle life: a little breathing sway of the torso and head."""
    f = rng.uniform(0.2, 0.5)
    ph = rng.uniform(0, TAU)
    a["lean"] += amp * np.sin(TAU * f * t + ph)
    a["head_roll"] += amp * np.sin(TAU * f * 0.7 * t + ph + 1)


def _gait(t, rng, *, freq, amp, knee, arm, bend, travel_speed, run=False):
    """Walk / run cycle shared code. freq is strides per second."""
    a = _rest(t)
    ph = TAU * freq * t + rng.uniform(0, TAU)
    s = np.sin(ph)
    a["r_hip_flex"] = amp * s
    a["l_hip_flex"] = -amp * s
    # knee bends while the leg swings forward (ahead of the hip angle)
    a["r_knee"] = 0.08 + knee * np.clip(np.sin(ph + 1.3), 0, None) ** 1.5
    a["l_knee"] = 0.08 + knee * np.clip(np.sin(ph + 1.3 + np.pi), 0, None) ** 1.5
    a["r_sh_flex"] = -arm * s
    a["l_sh_flex"] = arm * s
    a["r_fa_flex"] = a["r_sh_flex"] + bend + 0.3 * arm * np.clip(-s, 0, None)
    a["l_fa_flex"] = a["l_sh_flex"] + bend + 0.3 * arm * np.clip(s, 0, None)
    a["r_sh_abd"][:] = a["l_sh_abd"][:] = 0.1
    a["r_fa_abd"][:] = a["l_fa_abd"][:] = 0.05
    a["pitch"][:] = 0.12 if run else 0.03
    if run:
        a["root_dy"] = 0.025 * np.abs(np.sin(ph))
    side = rng.random()
    if side < 0.55:  # profile, travelling in the facing direction
        d = float(rng.choice([-1, 1]))
        yaw = d * rng.uniform(1.2, 1.57)
        a["yaw"][:] = yaw
        a["root_x"] = d * travel_speed * t * np.sin(abs(yaw))
    elif side < 0.8:  # three-quarter
        d = float(rng.choice([-1, 1]))
        yaw = d * rng.uniform(0.5, 1.0)
        a["yaw"][:] = yaw
        a["root_x"] = d * 0.5 * travel_speed * t * np.sin(abs(yaw))
    else:  # towards the camera, in place
        a["yaw"][:] = rng.normal(0, 0.15)
    a["head_pitch"][:] = rng.uniform(-0.1, 0.1)
    return a


@motion
def walk(t, rng):
    freq = rng.uniform(0.8, 1.1)
    amp = rng.uniform(0.3, 0.45)
    a = _gait(t, rng, freq=freq, amp=amp, knee=rng.uniform(0.6, 0.9), arm=rng.uniform(0.2, 0.45),
              bend=rng.uniform(0.1, 0.35), travel_speed=2.2 * freq * amp * 0.46)
    return a, {"freq": freq, "amp": amp}


@motion
def run(t, rng):
    freq = rng.uniform(1.2, 1.6)
    amp = rng.uniform(0.55, 0.8)
    a = _gait(t, rng, freq=freq, amp=amp, knee=rng.uniform(1.3, 1.8), arm=rng.uniform(0.5, 0.9),
              bend=rng.uniform(1.1, 1.5), travel_speed=2.5 * freq * amp * 0.46, run=True)
    return a, {"freq": freq, "amp": amp}


@motion
def wave(t, rng):
    a = _rest(t)
    freq = rng.uniform(1.2, 2.5)
    amp = rng.uniform(0.3, 0.6)
    ph = TAU * freq * t + rng.uniform(0, TAU)
    arms = {"r": ["r"], "l": ["l"], "both": ["r", "l"]}[rng.choice(["r", "l", "r", "both"])]
    for k, s in enumerate(arms):
        sh = rng.uniform(1.3, 2.3)
        a[f"{s}_sh_abd"][:] = sh
        a[f"{s}_sh_flex"][:] = rng.uniform(-0.1, 0.3)
        a[f"{s}_fa_abd"] = sh + rng.uniform(0.5, 1.0) + amp * np.sin(ph + k * np.pi)
        a[f"{s}_fa_flex"][:] = rng.uniform(0.0, 0.3)
    _sway(a, t, rng)
    a["yaw"][:] = _front_yaw(rng)
    return a, {"freq": freq, "amp": amp, "arms": arms}


@motion
def jump(t, rng):
    a = _rest(t)
    period = rng.uniform(0.8, 1.2)
    height = rng.uniform(0.06, 0.15)
    s = ((t / period) + rng.uniform(0, 1)) % 1.0
    crouch = _smooth_pulse(s / 0.35) * (s < 0.35) + _smooth_pulse((s - 0.75) / 0.5) * (s > 0.75)
    crouch = np.clip(crouch, 0, 1)
    air = np.where((s > 0.35) & (s < 0.75), np.sin(np.pi * (s - 0.35) / 0.4), 0.0)
    depth = rng.uniform(0.7, 1.2)
    for side in "rl":
        a[f"{side}_knee"] = 0.05 + depth * crouch + 0.25 * air
        a[f"{side}_hip_flex"] = 0.5 * depth * crouch + 0.15 * air
        a[f"{side}_foot"] = 0.4 * air
        a[f"{side}_sh_flex"] = -0.5 * crouch + 2.6 * air
        a[f"{side}_fa_flex"] = a[f"{side}_sh_flex"] + 0.2
        a[f"{side}_sh_abd"] = 0.15 + 0.3 * air
    a["pitch"] = 0.35 * crouch
    a["root_dy"] = height * air
    a["yaw"][:] = _front_yaw(rng)
    return a, {"period": period, "height": height}


@motion
def squat(t, rng):
    a = _rest(t)
    freq = rng.uniform(0.4, 0.8)
    depth = rng.uniform(1.0, 1.9)
    c = 0.5 - 0.5 * np.cos(TAU * freq * t + rng.uniform(0, TAU))
    arms_forward = rng.random() < 0.6
    for side in "rl":
        a[f"{side}_knee"] = depth * c
        a[f"{side}_hip_flex"] = 0.62 * depth * c
        a[f"{side}_hip_abd"][:] = rng.uniform(0.06, 0.15)
        if arms_forward:
            a[f"{side}_sh_flex"] = 1.45 * c
            a[f"{side}_fa_flex"] = 1.45 * c + 0.05
        else:  # hands on hips
            a[f"{side}_sh_abd"][:] = 0.6
            a[f"{side}_fa_abd"][:] = -0.9
            a[f"{side}_fa_flex"][:] = -0.3
    a["pitch"] = 0.3 * depth * c
    a["yaw"][:] = _front_yaw(rng, 0.8)
    return a, {"freq": freq, "depth": depth, "arms_forward": arms_forward}


@motion
def turn(t, rng):
    a = _rest(t)
    speed = float(rng.choice([-1, 1]) * rng.uniform(1.5, 3.5))  # rad/s
    a["yaw"] = rng.uniform(-0.5, 0.5) + speed * t
    step = TAU * 2.0 * abs(speed) / np.pi * t  # small steps while turning
    for k, side in enumerate("rl"):
        a[f"{side}_hip_flex"] = 0.15 * np.clip(np.sin(step + k * np.pi), 0, None)
        a[f"{side}_knee"] = 0.3 * np.clip(np.sin(step + k * np.pi), 0, None)
        a[f"{side}_sh_abd"][:] = rng.uniform(0.1, 0.5)
    _sway(a, t, rng)
    return a, {"speed": speed}


@motion
def arm_swing(t, rng):
    """Dance: arms swinging side to side together, hips swaying, knees bouncing."""
    a = _rest(t)
    freq = rng.uniform(0.6, 1.2)
    amp = rng.uniform(0.5, 1.0)
    ph = TAU * freq * t + rng.uniform(0, TAU)
    s = np.sin(ph)
    a["r_sh_abd"] = 0.3 + amp * np.clip(-s, 0, None) * 1.6 + 0.1
    a["l_sh_abd"] = 0.3 + amp * np.clip(s, 0, None) * 1.6 + 0.1
    a["r_sh_abd"] -= 0.5 * amp * np.clip(s, 0, None)
    a["l_sh_abd"] -= 0.5 * amp * np.clip(-s, 0, None)
    a["r_fa_abd"] = a["r_sh_abd"] + 0.3
    a["l_fa_abd"] = a["l_sh_abd"] + 0.3
    a["r_sh_flex"][:] = a["l_sh_flex"][:] = 0.3
    a["r_fa_flex"][:] = a["l_fa_flex"][:] = 0.6
    a["lean"] = 0.08 * s
    a["head_roll"] = 0.1 * s
    bounce = 0.15 + 0.15 * np.sin(2 * ph)
    a["r_knee"] = a["l_knee"] = bounce
    a["r_hip_flex"] = a["l_hip_flex"] = 0.5 * bounce
    a["yaw"][:] = _front_yaw(rng)
    return a, {"freq": freq, "amp": amp}


@motion
def disco(t, rng):
    """Dance: one arm points up across the body, then down; the other hand on the hip."""
    a = _rest(t)
    freq = rng.uniform(0.7, 1.3)
    ph = TAU * freq * t + rng.uniform(0, TAU)
    c = 0.5 - 0.5 * np.cos(ph)
    p, o = ("r", "l") if rng.random() < 0.5 else ("l", "r")
    a[f"{p}_sh_abd"] = -0.2 + 2.7 * c
    a[f"{p}_sh_flex"] = 0.6 - 0.4 * c
    a[f"{p}_fa_abd"] = a[f"{p}_sh_abd"] + 0.05
    a[f"{p}_fa_flex"] = a[f"{p}_sh_flex"]
    a[f"{o}_sh_abd"][:] = 0.7
    a[f"{o}_fa_abd"][:] = -0.8
    a[f"{o}_fa_flex"][:] = -0.3
    a["lean"] = -0.1 * (c - 0.5) * (1 if p == "r" else -1)
    a["r_knee"] = a["l_knee"] = 0.12 + 0.12 * np.sin(2 * ph)
    a[f"{o}_hip_abd"] = 0.05 + 0.12 * c
    a["yaw"][:] = _front_yaw(rng)
    return a, {"freq": freq, "pointing": p}


@motion
def kick(t, rng):
    a = _rest(t)
    period = rng.uniform(0.8, 1.4)
    height = rng.uniform(0.9, 1.6)
    s = ((t / period) + rng.uniform(0, 1)) % 1.0
    k = _smooth_pulse(s)
    leg = "r" if rng.random() < 0.5 else "l"
    other = "l" if leg == "r" else "r"
    chamber = np.clip(np.sin(np.pi * s * 2), 0, None)  # knee bends on the way up
    a[f"{leg}_hip_flex"] = height * k
    a[f"{leg}_knee"] = 0.9 * chamber * (s < 0.5) + 0.05
    a[f"{leg}_foot"] = 0.5 * k
    a[f"{other}_knee"] = 0.15 * k
    a["pitch"] = -0.15 * k
    for side in "rl":
        a[f"{side}_sh_abd"] = 0.3 + 0.5 * k
        a[f"{side}_fa_abd"] = 0.2 + 0.6 * k
        a[f"{side}_fa_flex"][:] = 0.5
    d = float(rng.choice([-1, 1]))
    a["yaw"][:] = d * rng.uniform(0.3, 1.4)
    return a, {"period": period, "height": height, "leg": leg}


@motion
def clap(t, rng):
    a = _rest(t)
    freq = rng.uniform(1.0, 2.2)
    c = 0.5 - 0.5 * np.cos(TAU * freq * t + rng.uniform(0, TAU))  # 0 = hands together
    up = rng.uniform(0.4, 1.0)
    for side in "rl":
        a[f"{side}_sh_flex"][:] = up
        a[f"{side}_sh_abd"] = 0.05 + 0.35 * c
        a[f"{side}_fa_flex"][:] = min(up + 0.5, 1.3)
        a[f"{side}_fa_abd"] = -1.0 + 1.3 * c
    _sway(a, t, rng)
    a["yaw"][:] = _front_yaw(rng)
    return a, {"freq": freq, "up": up}


@motion
def jumping_jacks(t, rng):
    a = _rest(t)
    freq = rng.uniform(0.8, 1.4)
    c = 0.5 - 0.5 * np.cos(TAU * freq * t + rng.uniform(0, TAU))
    for side in "rl":
        a[f"{side}_sh_abd"] = 0.15 + 2.6 * c
        a[f"{side}_fa_abd"] = 0.15 + 2.8 * c
        a[f"{side}_hip_abd"] = 0.04 + 0.3 * c
        a[f"{side}_knee"] = 0.1 + 0.15 * np.sin(np.pi * c)
    a["root_dy"] = 0.04 * np.abs(np.sin(TAU * freq * t))
    a["yaw"][:] = _front_yaw(rng, 0.3)
    return a, {"freq": freq}


@motion
def punch(t, rng):
    """Boxing: fists up in a guard, alternating straight punches."""
    a = _rest(t)
    freq = rng.uniform(0.8, 1.6)
    ph = TAU * freq * t + rng.uniform(0, TAU)
    for k, side in enumerate("rl"):
        p = np.clip(np.sin(ph + k * np.pi), 0, None) ** 2
        a[f"{side}_sh_flex"] = 0.4 + 1.1 * p
        a[f"{side}_sh_abd"] = 0.3 - 0.25 * p
        a[f"{side}_fa_flex"] = 2.3 - 0.8 * p
        a[f"{side}_fa_abd"] = -0.5 + 0.45 * p
        a[f"{side}_knee"][:] = 0.2
        a[f"{side}_hip_flex"][:] = 0.1
    a["r_hip_flex"] += 0.15
    a["head_pitch"][:] = 0.15
    a["yaw"][:] = float(rng.choice([-1, 1]) * rng.uniform(0.2, 0.9))
    a["lean"] = 0.05 * np.sin(ph)
    return a, {"freq": freq}


@motion
def side_step(t, rng):
    """Dance: stepping left and right with arms swinging and the body swaying."""
    a = _rest(t)
    freq = rng.uniform(0.5, 0.9)
    width = rng.uniform(0.08, 0.18)
    ph = TAU * freq * t + rng.uniform(0, TAU)
    s = np.sin(ph)
    a["root_x"] = width * s
    a["r_hip_abd"] = 0.05 + 0.2 * np.clip(-np.cos(ph), 0, None)
    a["l_hip_abd"] = 0.05 + 0.2 * np.clip(np.cos(ph), 0, None)
    a["r_knee"] = 0.15 + 0.2 * np.clip(np.sin(2 * ph), 0, None)
    a["l_knee"] = 0.15 + 0.2 * np.clip(-np.sin(2 * ph), 0, None)
    a["r_hip_flex"], a["l_hip_flex"] = 0.5 * a["r_knee"], 0.5 * a["l_knee"]
    a["lean"] = -0.08 * s
    a["head_roll"] = 0.08 * s
    for k, side in enumerate("rl"):
        a[f"{side}_sh_flex"] = 0.6 * np.sin(ph + k * np.pi)
        a[f"{side}_fa_flex"] = a[f"{side}_sh_flex"] + 1.0
        a[f"{side}_sh_abd"][:] = 0.25
    a["yaw"][:] = _front_yaw(rng)
    return a, {"freq": freq, "width": width}


@motion
def idle(t, rng):
    """Standing, shifting weight from foot to foot, looking around."""
    a = _rest(t)
    _sway(a, t, rng, amp=0.04)
    f = rng.uniform(0.4, 0.8)
    ph = TAU * f * t + rng.uniform(0, TAU)
    a["root_x"] = 0.03 * np.sin(ph)
    a["lean"] += 0.05 * np.sin(ph)
    a["r_knee"] = 0.05 + 0.15 * np.clip(np.sin(ph), 0, None)
    a["l_knee"] = 0.05 + 0.15 * np.clip(-np.sin(ph), 0, None)
    a["head_yaw"] = 0.5 * np.sin(0.7 * ph + 1.0)
    a["r_sh_abd"] = 0.12 + 0.1 * np.sin(ph)
    a["l_sh_abd"] = 0.12 - 0.1 * np.sin(ph)
    a["yaw"][:] = _front_yaw(rng, 0.8)
    return a, {"freq": f}


def sample_motion(name: str | None, t: np.ndarray, rng: np.random.Generator):
    """Run motion ``name`` (or a random one) at times ``t``. Returns (name, angles, params)."""
    if name is None:
        name = str(rng.choice(sorted(MOTIONS)))
    if name not in MOTIONS:
        from kinemate.errors import UsageError

        raise UsageError(f"unknown motion {name!r}; choose one of: {', '.join(sorted(MOTIONS))}")
    angles, params = MOTIONS[name](t, rng)
    params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
    return name, angles, params
