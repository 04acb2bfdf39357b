"""Attention pictures (lesson 01): heatmaps of attention probabilities, the share of weight a head puts on
the previous token, and the RoPE score of one query-key pair against their distance.

Every function takes real tensors (from the package or a trained model) and returns a plotly figure or a
tensor, so the lesson shows it in one line and a test inspects it. Taught in lessons/01_baseline_gpt.ipynb.
"""

# Shapes: H heads, T queries, S keys (the T queries are the last T of the S keys), K head width

from __future__ import annotations

import torch
from plotly import graph_objects as go
from torch import Tensor

from ..rope import apply_rope

ROW_PX = 26  # height per query row, so one-token labels never overlap
MIN_HEIGHT = 340


def _heatmap_axes(keys: list[str], t: int) -> dict:
    """Numeric axes with token tick labels: a categorical axis would merge repeated tokens."""
    s = len(keys)
    return dict(xaxis=dict(title="key", tickmode="array", tickvals=list(range(s)), ticktext=keys, automargin=True),
                yaxis=dict(title="query", autorange="reversed", tickmode="array", tickvals=list(range(t)),
                           ticktext=keys[s - t:], automargin=True))


def attention_heatmap(probs: Tensor, tokens: list[str] | None = None, *, title: str = "Attention probabilities",
                      head_titles: list[str] | None = None, head: int = 0) -> go.Figure:
    """Heatmap of post-softmax attention: keys on x, queries on y (query 0 on top).

    probs (T, S) for one head, or (H, T, S) with a slider over heads. The T queries are the last T of the
    S keys (as with a KV cache), so `tokens` has S strings and the query labels are its last T.
    `head_titles` (one per head) replace the title as the slider moves; by default it is "<title>, head h".
    `head` is the head shown first.
    The figure is tall enough for one readable label per row.
    """
    if probs.dim() not in (2, 3):
        raise ValueError(f"probs must be (T, S) for one head or (H, T, S) for H heads, got shape "
                         f"{tuple(probs.shape)}")
    heads = probs.detach().float().cpu().reshape(-1, *probs.shape[-2:]).numpy()  # (H, T, S)
    n_heads, t, s = heads.shape
    if t > s:
        raise ValueError(f"probs has T={t} queries but only S={s} keys; queries attend to at most S keys")
    if tokens is not None and len(tokens) != s:
        raise ValueError(f"got {len(tokens)} tokens for S={s} keys; pass one token string per key")
    if probs.dim() == 2:
        titles = [title]
    else:
        titles = head_titles or [f"{title}, head {h}" for h in range(n_heads)]
    if len(titles) != n_heads:
        raise ValueError(f"got {len(titles)} head_titles for {n_heads} heads; pass one per head")
    if not 0 <= head < n_heads:
        raise ValueError(f"head={head} is not one of the {n_heads} heads (0..{n_heads - 1})")
    keys = tokens if tokens is not None else [str(j) for j in range(s)]
    slider_px = 90 if n_heads > 1 else 0
    fig = go.Figure(layout=dict(title=titles[head], template="plotly_white", **_heatmap_axes(keys, t),
                                height=max(MIN_HEIGHT, ROW_PX * t + 170 + slider_px),
                                margin=dict(t=70, b=40 + slider_px)))
    zmax = float(heads.max()) or 1.0  # one colour scale for all heads, so they can be compared
    for h in range(n_heads):
        fig.add_trace(go.Heatmap(z=heads[h], x=list(range(s)), y=list(range(t)), zmin=0.0, zmax=zmax,
                                 colorscale="Blues", visible=h == head, name=f"head {h}",
                                 hovertemplate="query %{y} → key %{x}<br>p = %{z:.3f}<extra></extra>"))
    if n_heads > 1:
        steps = [dict(method="update", label=str(h),
                      args=[{"visible": [i == h for i in range(n_heads)]}, {"title.text": titles[h]}])
                 for h in range(n_heads)]
        fig.update_layout(sliders=[dict(active=head, currentvalue=dict(prefix="head "), steps=steps,
                                        pad=dict(t=50))])
    return fig


def previous_token_share(probs: Tensor) -> Tensor:
    """Mean weight each head puts on the key just before the query (queries with no earlier key skipped).

    probs (H, T, S) or (T, S), the T queries being the last T keys -> (H,) or a scalar. A head near 1 is a
    "previous-token head": it copies information from token i-1 into position i.
    """
    if probs.dim() not in (2, 3):
        raise ValueError(f"probs must be (T, S) or (H, T, S), got shape {tuple(probs.shape)}")
    t, s = probs.shape[-2:]
    query_pos = torch.arange(s - t, s)  # absolute position of each query
    rows = (query_pos >= 1).nonzero().flatten()  # queries that have a previous token
    if len(rows) == 0:
        raise ValueError("no query has a previous token: pass at least two positions")
    prev = probs[..., rows, query_pos[rows] - 1]  # (H, R): weight on the key one step back
    return prev.float().mean(-1)


def even_previous_share(t: int) -> float:
    """previous_token_share of a head that spreads its weight evenly over the keys each query may see."""
    if t < 2:
        raise ValueError(f"need at least two positions, got {t}")
    return sum(1.0 / (i + 1) for i in range(1, t)) / (t - 1)


def rope_scores_by_distance(q: Tensor, k: Tensor, freqs: Tensor, query_pos: int, max_distance: int) -> Tensor:
    """q·k after RoPE with the query at `query_pos` and the key d = 0..max_distance positions earlier.

    q, k (K,) one head's vectors; freqs (positions, K/2) from rope_frequencies -> (max_distance + 1,)
    """
    if q.shape != k.shape or q.dim() != 1:
        raise ValueError(f"q and k must be (K,) vectors of the same width, got {tuple(q.shape)}, {tuple(k.shape)}")
    if max_distance > query_pos:
        raise ValueError(f"max_distance={max_distance} reaches before position 0 from query_pos={query_pos}")
    if query_pos >= len(freqs):
        raise ValueError(f"query_pos={query_pos} needs a RoPE table of more than {len(freqs)} positions")
    key_pos = torch.arange(query_pos, query_pos - max_distance - 1, -1)  # (D+1,) newest key first
    qr = apply_rope(q.reshape(1, 1, 1, -1), freqs[query_pos:query_pos + 1]).flatten()  # (K,)
    kr = apply_rope(k.reshape(1, 1, 1, -1).expand(1, len(key_pos), 1, -1), freqs[key_pos])  # (1, D+1, 1, K)
    return kr[0, :, 0] @ qr  # (D+1,)


def rope_distance_figure(q: Tensor, k: Tensor, freqs: Tensor, *, query_positions: tuple[int, ...],
                         max_distance: int, title: str = "RoPE: the score of one query and key against their distance"
                         ) -> go.Figure:
    """The same q and k, rotated by RoPE, scored at every distance; one curve per query position.

    The curves lie on top of each other because RoPE scores depend on the distance only; the first is a line,
    the others markers, so the overlap shows.
    """
    fig = go.Figure(layout=dict(title=title, template="plotly_white", height=380,
                                xaxis_title="distance (query position − key position)",
                                yaxis_title="q·k after rotation"))
    distances = list(range(max_distance + 1))
    for i, pos in enumerate(query_positions):
        scores = rope_scores_by_distance(q, k, freqs, pos, max_distance).tolist()
        style = dict(mode="lines") if i == 0 else dict(mode="markers", marker=dict(size=5, symbol="circle-open"))
        fig.add_scatter(x=distances, y=scores, name=f"query at position {pos}", **style)
    return fig
