"""Hierarchical user profiling (METHOD.md, "Hierarchical LLM profiling").

1. k-means (seeded) on the item embeddings: every item gets a cluster.
2. Each user's TRAINING history (never the validation or test target) is split by cluster; for
   each non-empty cluster the analyzer is asked about its 15 most recent titles.
3. The summarizer merges the cluster-level statements into one profile.
4. The stage embeds the profile text with the item embedder (template profiles with
   profile.template_vectors=pieces: each distinct title and keyword of all texts once, a user's
   vector the character-weighted mean of its text's parts; `template_pieces`).

Every reply is checked (empty, over length, refusal, garbage). A bad reply is asked once more
with a note; a second bad reply is replaced by the extractive template text, and each case is
counted. The `template` backend calls no LLM at all: per cluster "Interested in: " + its most
recent titles (+ frequent title words), the reference profiles of METHOD.md.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from llm4cdsr.llm.chat import CachedChat, ChatRequest
from llm4cdsr.llm.texts import clean_value

log = logging.getLogger(__name__)

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]+")
_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i can not|i'?m unable|i am unable|i'?m not able|"
    r"as an ai|as a language model|i do not have|i don'?t have (enough|access))",
    re.IGNORECASE,
)
# Words too common in product titles to describe anyone's taste.
_TITLE_NOISE = frozenset("pack count ounce ounces oz lb lbs inch inches size set piece pieces item new".split())


# ----- clusters ---------------------------------------------------------------------------
def cluster_items(item_vectors: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Cluster id per global item id; item_vectors is (N, D) for ids 1..N; row 0 of the result is -1."""
    k = min(n_clusters, len(item_vectors))
    km = KMeans(n_clusters=k, random_state=seed, n_init=3)
    labels = km.fit_predict(item_vectors.astype(np.float32))
    return np.concatenate([[-1], labels]).astype(np.int32)


@dataclass
class UserClusters:
    """A user's training items grouped by cluster, in cluster-id order, each chronological."""

    clusters: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (cluster id, global ids)


def split_by_cluster(history: np.ndarray, labels: np.ndarray) -> UserClusters:
    user_labels = labels[history]
    out = UserClusters()
    for c in np.unique(user_labels):
        out.clusters.append((int(c), history[user_labels == c]))
    return out


@dataclass
class ClusterGroups:
    """Every profiled user's training items grouped by cluster, as flat arrays.

    Group g is one (user, cluster) pair: `user[g]` (row in the profiled users), `cluster[g]`, and its
    items `items[offsets[g]:offsets[g + 1]]`, chronological. Groups are ordered by user, then by
    cluster id: the order of `split_by_cluster`, built for all users at once.
    """

    n_users: int
    user: np.ndarray  # (G,) int64
    cluster: np.ndarray  # (G,) int64
    offsets: np.ndarray  # (G + 1,) int64
    items: np.ndarray  # (sum of lengths,) global ids

    def user_clusters(self) -> list[UserClusters]:
        """The same groups as one UserClusters per user (the LLM path's form)."""
        out = [UserClusters() for _ in range(self.n_users)]
        for g, (u, c) in enumerate(zip(self.user.tolist(), self.cluster.tolist())):
            out[u].clusters.append((c, self.items[self.offsets[g]:self.offsets[g + 1]]))
        return out


def group_by_cluster(train_items: np.ndarray, train_offsets: np.ndarray, users: np.ndarray, labels: np.ndarray
                     ) -> ClusterGroups:
    """ClusterGroups of `users` from CSR training histories (train_items, train_offsets)."""
    users = np.asarray(users, dtype=np.int64)
    starts, lengths = train_offsets[users], train_offsets[users + 1] - train_offsets[users]
    row = np.repeat(np.arange(len(users), dtype=np.int64), lengths)  # (T,) profiled-user row of each item
    step = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    items = train_items[np.repeat(starts, lengths) + step]
    cluster = labels[items].astype(np.int64)
    order = np.lexsort((step, cluster, row))  # by user, cluster, then time
    row, cluster, items = row[order], cluster[order], items[order]
    new_group = np.ones(len(items), dtype=bool)
    new_group[1:] = (row[1:] != row[:-1]) | (cluster[1:] != cluster[:-1])
    first = np.flatnonzero(new_group)
    return ClusterGroups(len(users), row[first], cluster[first], np.append(first, len(items)).astype(np.int64), items)


# ----- reply checks -----------------------------------------------------------------------
def check_reply(text: str, max_words: int, slack: float) -> str | None:
    """None if the reply is usable, else the reason: empty | too_long | refusal | garbage."""
    stripped = text.strip()
    if not stripped:
        return "empty"
    words = stripped.split()
    if len(words) > max_words * slack:
        return "too_long"
    if _REFUSAL.search(stripped):
        return "refusal"
    letters = sum(ch.isalpha() for ch in stripped)
    real_words = _WORD.findall(stripped)
    if letters < 0.6 * len(stripped.replace(" ", "")) or len(real_words) < 3:
        return "garbage"
    # A model stuck in a loop repeats one token over and over.
    most = Counter(w.lower() for w in words).most_common(1)[0][1]
    if len(words) >= 8 and most > 0.4 * len(words):
        return "garbage"
    return None


# ----- texts ------------------------------------------------------------------------------
def recent_titles(ids: np.ndarray, titles: np.ndarray, max_titles: int, max_chars: int) -> list[str]:
    """The cluster's most recent titles, oldest first (the order the user met them)."""
    return [clean_value(titles[i], max_chars) for i in ids[-max_titles:]]


def frequent_keywords(ids: np.ndarray, titles: np.ndarray, n: int) -> list[str]:
    """Words seen in at least two of these titles, most frequent first (ties: first seen)."""
    if n <= 0 or len(ids) < 2:
        return []
    counts: Counter = Counter()
    for i in ids:
        # Each word once per title, in title order (not a set's hash order, which changes with
        # PYTHONHASHSEED): ties of equal counts then come out first seen, in every process.
        words = dict.fromkeys(w.lower() for w in _WORD.findall(str(titles[i])))
        counts.update(w for w in words if len(w) > 2 and w not in ENGLISH_STOP_WORDS and w not in _TITLE_NOISE)
    return [w for w, c in counts.most_common(n) if c >= 2]


def template_cluster_text(ids: np.ndarray, titles: np.ndarray, prof: dict) -> str:
    text = "Interested in: " + "; ".join(recent_titles(ids, titles, prof["max_titles"], prof["max_title_chars"])) + "."
    keywords = frequent_keywords(ids, titles, prof["template_keywords"])
    if keywords:
        text += " Frequent words: " + ", ".join(keywords) + "."
    return text


def template_profile(uc: UserClusters, titles: np.ndarray, prof: dict) -> str:
    return " ".join(template_cluster_text(ids, titles, prof) for _, ids in uc.clusters)


def _title_words(title: str) -> list[str]:
    """frequent_keywords' words of one title: each once, in title order, noise left out."""
    words = dict.fromkeys(w.lower() for w in _WORD.findall(title))
    return [w for w in words if len(w) > 2 and w not in ENGLISH_STOP_WORDS and w not in _TITLE_NOISE]


@dataclass
class _TemplateParts:
    """What the template texts of all groups are made of (see `template_profiles`)."""

    cleaned: list[str]  # cleaned title of each distinct item in the groups (a row of `used`)
    shown: np.ndarray  # (S,) row in `cleaned` of each shown title: by group, then oldest first
    shown_bounds: list[int]  # (G + 1,) group g shows shown[shown_bounds[g]:shown_bounds[g + 1]]
    kw_group: np.ndarray  # (K,) group of each keyword, ascending; most frequent first within a group
    kw_word: np.ndarray  # (K,) index into `vocab`
    vocab: list[str]


def _template_parts(groups: ClusterGroups, titles: np.ndarray, prof: dict) -> _TemplateParts:
    """Each distinct item's cleaned title and words computed once; the words counted for all
    groups together with one sort."""
    n_titles, n_keywords = prof["max_titles"], prof["template_keywords"]
    used = np.unique(groups.items)
    # Per used item: its cleaned title and its word ids (CSR); index by position in `used`.
    cleaned = [clean_value(titles[i], prof["max_title_chars"]) for i in used.tolist()]
    vocab: dict[str, int] = {}
    word_lists = [[vocab.setdefault(w, len(vocab)) for w in _title_words(str(titles[i]))] for i in used.tolist()]
    n_words = np.fromiter((len(w) for w in word_lists), dtype=np.int64, count=len(word_lists))
    word_offsets = np.concatenate([[0], np.cumsum(n_words)])
    word_ids = np.fromiter((w for ws in word_lists for w in ws), dtype=np.int64, count=int(word_offsets[-1]))
    slot = np.searchsorted(used, groups.items)  # (T,) row in `used` of each grouped item
    sizes = np.diff(groups.offsets)
    group_of = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)  # (T,)

    # Keywords: counts of (group, word) over every title of the group (frequent_keywords reads
    # them all, not only the recent ones); ties go to the word seen first, as Counter.most_common.
    kw_group = kw_word = np.zeros(0, dtype=np.int64)
    if n_keywords > 0:
        take = sizes[group_of] >= 2  # a group of one title has no frequent words
        t_slot, t_group = slot[take], group_of[take]
        per = n_words[t_slot]
        # (W,) the words of each grouped title, in group, time and title order: the Counter's order.
        pos = np.arange(int(per.sum()), dtype=np.int64) - np.repeat(np.cumsum(per) - per, per)
        word = word_ids[np.repeat(word_offsets[t_slot], per) + pos]
        width = max(1, len(vocab))
        keys, first, counts = np.unique(np.repeat(t_group, per) * width + word, return_index=True, return_counts=True)
        keep = counts >= 2
        keys, first, counts = keys[keep], first[keep], counts[keep]
        g = keys // width
        order = np.lexsort((first, -counts, g))  # by group, count descending, first seen
        g, w = g[order], (keys % width)[order]
        top = (np.arange(len(g)) - np.searchsorted(g, g)) < n_keywords  # the first n_keywords of each group
        kw_group, kw_word = g[top], w[top]

    # Titles: the group's last max_titles items, oldest first.
    recent = np.arange(len(slot)) >= np.repeat(groups.offsets[1:], sizes) - n_titles
    bounds = np.concatenate([[0], np.cumsum(np.minimum(sizes, n_titles))]).tolist()
    return _TemplateParts(cleaned, slot[recent], bounds, kw_group, kw_word, list(vocab))


def template_profiles(groups: ClusterGroups, titles: np.ndarray, prof: dict) -> list[str]:
    """`template_profile` of every user at once: the same texts, byte for byte (a test compares
    them), without a Python pass per title and user."""
    parts = _template_parts(groups, titles, prof)
    # Containers are few on purpose: a list per group or user (hundreds of thousands) made the
    # garbage collector's passes the largest cost; strings are not tracked by it.
    keywords: dict[int, str] = {}  # group -> " Frequent words: a, b."
    g, names = parts.kw_group, [parts.vocab[w] for w in parts.kw_word.tolist()]
    starts = (np.flatnonzero(np.r_[True, g[1:] != g[:-1]]).tolist() if len(g) else []) + [len(g)]
    for a, b in zip(starts[:-1], starts[1:]):
        keywords[int(g[a])] = " Frequent words: " + ", ".join(names[a:b]) + "."
    flat = [parts.cleaned[i] for i in parts.shown.tolist()]
    bounds = parts.shown_bounds
    texts = ["Interested in: " + "; ".join(flat[bounds[g_idx]:bounds[g_idx + 1]]) + "." + keywords.get(g_idx, "")
             for g_idx in range(len(bounds) - 1)]
    # Groups are ordered by user: each user's texts are one run of them.
    user_bounds = np.searchsorted(groups.user, np.arange(groups.n_users + 1)).tolist()
    return [" ".join(texts[user_bounds[u]:user_bounds[u + 1]]) for u in range(groups.n_users)]


@dataclass
class TemplatePieces:
    """The parts of every user's template text, each distinct part to be embedded once.

    A user's vector is the mean of its parts' vectors weighted by their characters (the whole
    text's vector is a mean over its tokens; the parts are read apart, without the context of the
    rest), normalised. Parts: the two labels "Interested in:" and "Frequent words:" once per
    cluster that shows them, each shown title, each keyword. A user without training items has
    the empty text, embedded as the whole-text path embeds it.
    """

    texts: list[str]  # (P,) distinct
    weights: sparse.csr_matrix  # (U, P) float32: characters of each part in each user's text

    def pool(self, vectors: np.ndarray) -> np.ndarray:
        """(U, D) float32 unit rows from the parts' vectors (P, D)."""
        pooled = np.asarray(self.weights @ np.asarray(vectors, dtype=np.float32), dtype=np.float32)  # (U, D)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))


def template_pieces(groups: ClusterGroups, titles: np.ndarray, prof: dict) -> TemplatePieces:
    """`TemplatePieces` of every user, from the same parts as `template_profiles` (all users at once)."""
    parts = _template_parts(groups, titles, prof)
    labels = ["Interested in:", "Frequent words:", ""]
    texts = labels + parts.cleaned + parts.vocab  # candidate parts, by id
    first_word = len(labels) + len(parts.cleaned)
    kw_groups = np.unique(parts.kw_group)
    shown_sizes = np.diff(parts.shown_bounds)
    user = np.concatenate([groups.user, np.repeat(groups.user, shown_sizes), groups.user[kw_groups],
                           groups.user[parts.kw_group]])
    part = np.concatenate([np.zeros(len(groups.user), dtype=np.int64), len(labels) + parts.shown,
                           np.ones(len(kw_groups), dtype=np.int64), first_word + parts.kw_word])
    empty = np.setdiff1d(np.arange(groups.n_users), groups.user)  # users without training items
    user, part = np.concatenate([user, empty]), np.concatenate([part, np.full(len(empty), 2, dtype=np.int64)])
    chars = np.fromiter(map(len, texts), dtype=np.float32, count=len(texts))
    weight = np.where(part == 2, np.float32(1), chars[part])  # the empty text: any weight, it is alone
    keep = weight > 0  # an empty cleaned title adds nothing to the text
    # Distinct texts only (two items may share a title): each is embedded and stored once.
    ids, part = np.unique(part[keep], return_inverse=True)
    index: dict[str, int] = {}
    remap = np.array([index.setdefault(texts[i], len(index)) for i in ids.tolist()], dtype=np.int64)
    weights = sparse.csr_matrix((weight[keep], (user[keep], remap[part])), shape=(groups.n_users, len(index)),
                                dtype=np.float32)  # duplicates (a label per cluster) are summed
    return TemplatePieces(list(index), weights)


# ----- LLM profiling ----------------------------------------------------------------------
def analyzer_request(ids: np.ndarray, titles: np.ndarray, prof: dict, retry: bool = False) -> ChatRequest:
    listed = "\n".join(f"- {t}" for t in recent_titles(ids, titles, prof["max_titles"], prof["max_title_chars"]))
    user = prof["analyzer_prompt"].format(titles=listed, max_words=prof["analyzer_words"])
    if retry:
        user += "\n" + prof["retry_note"].format(max_words=prof["analyzer_words"])
    return ChatRequest((("system", prof["analyzer_system"]), ("user", user)), _max_tokens(prof["analyzer_words"], prof))


def summarizer_request(statements: list[str], prof: dict, retry: bool = False) -> ChatRequest:
    listed = "\n".join(f"{i + 1}. {s}" for i, s in enumerate(statements))
    user = prof["summarizer_prompt"].format(interests=listed, max_words=prof["summarizer_words"])
    if retry:
        user += "\n" + prof["retry_note"].format(max_words=prof["summarizer_words"])
    return ChatRequest((("system", prof["summarizer_system"]), ("user", user)), _max_tokens(prof["summarizer_words"], prof))


def _max_tokens(words: int, prof: dict) -> int:
    # About 1.4 tokens per English word; the room above the slack lets an over-long reply show
    # as over length instead of being silently cut to size.
    return int(words * prof["length_slack"] * 1.4) + 16


@dataclass
class CallStats:
    requests: int = 0
    ok_first: int = 0
    ok_retry: int = 0
    fallback: int = 0
    reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"requests": self.requests, "ok_first_try": self.ok_first, "ok_after_retry": self.ok_retry,
                "fallback": self.fallback, "bad_reply_reasons": dict(sorted(self.reasons.items()))}


def checked_round(chat: CachedChat, requests: list[ChatRequest], retries: list[ChatRequest], fallbacks: list[str],
                  max_words: int, prof: dict, stats: CallStats, desc: str) -> tuple[list[str], list[bool]]:
    """Ask, check, ask the bad ones once more, fall back for the still-bad ones.

    Returns each answer and whether it came from the LLM. `retries[i]` is the request to send
    when the answer to `requests[i]` is bad; `fallbacks[i]` is used when that one is bad too.
    """
    slack = prof["length_slack"]
    replies = chat.complete(requests, desc=desc)
    stats.requests += len(requests)
    answers = list(replies)
    from_llm = [True] * len(requests)
    bad = []
    for i, text in enumerate(replies):
        reason = check_reply(text, max_words, slack)
        if reason is None:
            stats.ok_first += 1
            answers[i] = text.strip()
        else:
            stats.reasons[reason] += 1
            bad.append(i)
    if bad:
        second = chat.complete([retries[i] for i in bad], desc=f"{desc} (retry)")
        stats.requests += len(bad)
        for i, text in zip(bad, second):
            reason = check_reply(text, max_words, slack)
            if reason is None:
                stats.ok_retry += 1
                answers[i] = text.strip()
            else:
                stats.reasons[reason] += 1
                stats.fallback += 1
                answers[i] = fallbacks[i]
                from_llm[i] = False
    return answers, from_llm


def llm_profiles(user_clusters: list[UserClusters], titles: np.ndarray, chat: CachedChat, prof: dict
                 ) -> tuple[list[str], list[str], dict]:
    """Profile texts, their sources ("llm" | "fallback"), and report figures."""
    # Round 1: one analyzer call per (user, non-empty cluster).
    flat: list[tuple[int, np.ndarray]] = [(u, ids) for u, uc in enumerate(user_clusters) for _, ids in uc.clusters]
    first = [analyzer_request(ids, titles, prof) for _, ids in flat]
    again = [analyzer_request(ids, titles, prof, retry=True) for _, ids in flat]
    fallback = [template_cluster_text(ids, titles, prof) for _, ids in flat]
    analyzer = CallStats()
    statements, _ = checked_round(chat, first, again, fallback, prof["analyzer_words"], prof, analyzer, "analyzer")
    per_user: list[list[str]] = [[] for _ in user_clusters]
    for (u, _), s in zip(flat, statements):
        per_user[u].append(s)

    # Round 2: one summarizer call per user with any history.
    users = [u for u, s in enumerate(per_user) if s]
    first = [summarizer_request(per_user[u], prof) for u in users]
    again = [summarizer_request(per_user[u], prof, retry=True) for u in users]
    # The fallback keeps what the analyzer said (LLM or template) rather than discarding it.
    fallback = [" ".join(per_user[u]) for u in users]
    summarizer = CallStats()
    summaries, from_llm = checked_round(chat, first, again, fallback, prof["summarizer_words"], prof, summarizer,
                                        "summarizer")
    texts = [""] * len(user_clusters)
    sources = ["fallback"] * len(user_clusters)
    for u, text, ok in zip(users, summaries, from_llm):
        texts[u] = text
        sources[u] = "llm" if ok else "fallback"
    report = {"analyzer": analyzer.as_dict(), "summarizer": summarizer.as_dict()}
    return texts, sources, report
