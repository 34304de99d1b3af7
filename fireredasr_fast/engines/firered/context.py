"""Contextual biasing of the beam search towards glossary terms (`--hotwords`).

The terms, as token ids of the model's tokenizer, form a prefix tree with Aho-Corasick failure
links (the context graph of sherpa-onnx and icefall, WeNet's context biasing). Every
hypothesis carries a state, a node of the tree: the longest term prefix its last tokens spell.
Scores, per hypothesis, change by:

- a token that extends the term prefix it is in: + the token's bonus (the term's weight x the
  score per token; a token shared by several terms takes the largest);
- a token that completes a term: its bonus, and the term's whole bonus is kept from then on;
- any other token (<eos> included): the bonus of the unfinished prefix is given back; when the
  token starts or continues another term prefix (found along the failure links), that
  prefix's bonus is gained at once.

So a hypothesis is only better off for the terms it finishes, and the search prefers to finish
a term it has started. A node's `acc` is the bonus of its whole prefix, `kept` the part of it
that completed terms have made permanent (the deepest term end on its path), and
`pending = acc - kept` what leaving gives back.

For the search (search.py), the transitions are tables on the model's device, so a step costs
a few gathers over the rows whatever the glossary: tokens that start a term (`root_bonus`,
the same for every state: a vector over the vocabulary), and per state the few tokens whose transition differs from that
(`over_*`, padded to the widest state). Every other token sends a hypothesis to the root.
No lookup per row and no failure-link walk happens in a step: both are in the tables.

A step's fixed cost is adding `root_bonus` to every row's scores; where few tokens start a
term (CPU), `ContextState.top` adds them in place to those columns only and puts the scores
back after the top-k, bit for bit (where that pays: docs/benchmarks.md#glossary-at-scale-and-forced-terms-issue-31).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

ROOT = 0
# The in-place path (ContextState.top) when at most 1/SPARSE_SHARE of the vocabulary starts a
# term: an indexed write costs tens of times a dense add per element on CPU (measured:
# docs/benchmarks.md#glossary-at-scale-and-forced-terms-issue-31).
SPARSE_SHARE = 32


@dataclass
class _Trie:
    """The host-side tree: children, bonus of the token into each node, term ends."""

    children: list[dict[int, int]]
    bonus: list[float]
    end: list[bool]

    @classmethod
    def build(cls, terms: Sequence[tuple[Sequence[int], float]]) -> _Trie:
        trie = cls([{}], [0.0], [False])
        for ids, bonus in terms:
            node = ROOT
            for token in ids:
                child = trie.children[node].get(token)
                if child is None:
                    child = len(trie.children)
                    trie.children[node][token] = child
                    trie.children.append({})
                    trie.bonus.append(bonus)
                    trie.end.append(False)
                trie.bonus[child] = max(trie.bonus[child], bonus)
                node = child
            if node != ROOT:
                trie.end[node] = True
        return trie

    def breadth_first(self) -> list[tuple[int, int, int]]:
        """(parent, token, child) for every edge, parents before children."""
        edges: list[tuple[int, int, int]] = []
        todo = deque([ROOT])
        while todo:
            node = todo.popleft()
            for token, child in self.children[node].items():
                edges.append((node, token, child))
                todo.append(child)
        return edges

    def failure_links(self, edges: list[tuple[int, int, int]]) -> list[int]:
        """Aho-Corasick: each node's longest proper suffix that is also a node."""
        fail = [ROOT] * len(self.children)
        for parent, token, child in edges:
            if parent == ROOT:
                continue
            f = fail[parent]
            while f != ROOT and token not in self.children[f]:
                f = fail[f]
            target = self.children[f].get(token, ROOT)
            fail[child] = target if target != child else ROOT
        return fail


class ContextGraph:
    """The automaton of a glossary's terms, as tables on `device` (see the module's text).

    `terms`: (token ids, bonus per token) pairs; empty id lists are ignored. `vocab`: the
    model's vocabulary size (every id below it).
    """

    def __init__(
        self, terms: Sequence[tuple[Sequence[int], float]], vocab: int, device: torch.device | str = "cpu"
    ) -> None:
        trie = _Trie.build([(list(ids), float(bonus)) for ids, bonus in terms if len(ids)])
        edges = trie.breadth_first()
        fail = trie.failure_links(edges)
        count = len(trie.children)
        acc, kept = [0.0] * count, [0.0] * count
        for parent, _token, child in edges:
            acc[child] = acc[parent] + trie.bonus[child]
            kept[child] = acc[child] if trie.end[child] else kept[parent]
        self.states = count
        self.acc = acc
        self.pending = [a - k for a, k in zip(acc, kept, strict=True)]
        self._trie, self._fail = trie, fail
        self._tables(vocab, device)

    def step(self, state: int, token: int) -> tuple[int, float]:
        """The next state and the score change of one token (host side: the reference the
        tables are built from, and what the tests check)."""
        children = self._trie.children
        if token in children[state]:
            child = children[state][token]
            return child, self.acc[child] - self.acc[state]
        node = self._fail[state]
        while node != ROOT and token not in children[node]:
            node = self._fail[node]
        target = children[node].get(token, ROOT)
        return target, self.acc[target] - self.pending[state]

    def _special(self, state: int) -> dict[int, int]:
        """The tokens whose transition from `state` is not the root's (token -> next state)."""
        out: dict[int, int] = {}
        node = state
        while node != ROOT:
            for token in self._trie.children[node]:
                out.setdefault(token, self.step(state, token)[0])
            node = self._fail[node]
        return out

    def _tables(self, vocab: int, device: torch.device | str) -> None:
        root = self._trie.children[ROOT]
        # token -> the bonus of starting a term with it (0 for the rest of the vocabulary).
        self.root_bonus = torch.zeros(vocab, device=device)
        for token, child in root.items():
            self.root_bonus[token] = self.acc[child]
        special = [self._special(s) for s in range(self.states)]
        width = max(1, max(len(s) for s in special))
        tok = torch.zeros(self.states, width, dtype=torch.long)
        delta = torch.zeros(self.states, width)
        match = torch.full((self.states, width), -1, dtype=torch.long)  # -1: a padded slot, no token's
        jump = torch.zeros(self.states, width, dtype=torch.long)
        for s, moves in enumerate(special):
            for j, (token, target) in enumerate(sorted(moves.items())):
                # What the token adds beyond the row's give-back and the root's bonus for it.
                root_part = self.acc[root[token]] if token in root else 0.0
                tok[s, j], match[s, j] = token, token
                delta[s, j] = self.step(s, token)[1] + self.pending[s] - root_part
                # Where it leads, relative to where the token leads from the root.
                jump[s, j] = target - root.get(token, ROOT)
        self.give_back = -torch.tensor(self.pending, device=device)
        self.over_tokens, self.over_delta = tok.to(device), delta.to(device)
        self.over_match, self.over_jump = match.to(device), jump.to(device)
        # token -> the state it leads to from a state without a special move for it.
        self.root_next = torch.zeros(vocab, dtype=torch.long, device=device)
        if root:
            self.root_next[torch.tensor(list(root), device=device)] = torch.tensor(list(root.values()), device=device)
        # The tokens that start a term and their bonuses, for the in-place path (None: dense).
        self.root_tokens: Tensor | None = None
        if torch.device(device).type == "cpu" and len(root) * SPARSE_SHARE <= vocab:
            self.root_tokens = torch.tensor(sorted(root), dtype=torch.long, device=device)
            self.root_values = self.root_bonus[self.root_tokens]


class ContextState:
    """The context state of each search row, moved along with the beams (search.py)."""

    def __init__(self, graph: ContextGraph, rows: int, device: torch.device) -> None:
        self.graph = graph
        self.state = torch.zeros(rows, dtype=torch.long, device=device)

    def top(self, t_scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Each row's best `k` tokens by biased score: (their biased scores, their ids, their
        own scores in `t_scores`, for the confidences). Where the graph has `root_tokens`,
        `t_scores` is biased in place and put back bit for bit before returning (the same
        additions as `biased`, so the same top-k); otherwise through `biased`."""
        g = self.graph
        if g.root_tokens is None:
            biased, give_back = self.biased(t_scores)
            top_s, top_y = torch.topk(biased, k=k, dim=1)
            return top_s + give_back[:, None], top_y, t_scores.gather(1, top_y)
        over = g.over_tokens[self.state]
        saved_root = t_scores.index_select(1, g.root_tokens)
        t_scores.index_add_(1, g.root_tokens, g.root_values.expand(t_scores.size(0), -1))
        saved_over = t_scores.gather(1, over)
        t_scores.scatter_add_(1, over, g.over_delta[self.state])
        top_s, top_y = torch.topk(t_scores, k=k, dim=1)
        t_scores.scatter_(1, over, saved_over)  # a padded slot repeats one value: restored alike
        t_scores.index_copy_(1, g.root_tokens, saved_root)
        return top_s + g.give_back[self.state][:, None], top_y, t_scores.gather(1, top_y)

    def biased(self, t_scores: Tensor) -> tuple[Tensor, Tensor]:
        """(the scores with each row's bonuses except its give-back, the give-back per row):
        the give-back is the same for every token a row has no special move for, so it is
        added after the top-k, to the k chosen only."""
        g = self.graph
        out = t_scores + g.root_bonus
        out.scatter_add_(1, g.over_tokens[self.state], g.over_delta[self.state])
        return out, g.give_back[self.state]

    def advance(self, parent: Tensor, new_y: Tensor) -> None:
        """Each row's next state: its parent's, moved by the token chosen."""
        g = self.graph
        prev = self.state.index_select(0, parent)
        # A state's special tokens are distinct, so at most one slot matches; its jump (0 for
        # none) moves the root's target to the special one.
        hit = g.over_match[prev] == new_y[:, None]
        self.state = g.root_next[new_y] + (hit * g.over_jump[prev]).sum(dim=1)

    def keep(self, rows: Tensor) -> None:
        self.state = self.state.index_select(0, rows)
