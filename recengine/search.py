"""Fuzzy title search over an item catalogue: typo-, article-, case- and punctuation-tolerant.

`TitleSearch(catalogue)` normalises every title once into one or more *keys* (lower case,
accents and punctuation removed, the leading English article dropped, the MovieLens form
"Matrix, The (1999)" turned back into "matrix"; alternative titles in parentheses such as
"Seven (a.k.a. Se7en)" become keys of their own). A query is normalised the same way and,
when it ends in a year ("Star Wars 1977", "Matrix, The (1999)"), is read both with and
without that year.

Ranking, best first:

1. exact key matches ("the matrix" -> The Matrix (1999)), then
2. prefix matches (what a person types: "matri" -> The Matrix, Matrix Reloaded, ...), then
3. fuzzy matches (typos, missing or reordered words), scored as below.

Inside a tier the higher score wins (rounded to 0.1), then the more popular title (the
catalogue's `popularity` column), then the lower item index. A year in the query keeps the
titles of that year as they are and costs the others 10 points and their exact status.

Scores (0-100) take the best of `fuzz.ratio` (whole-title typos: "forest gump" ->
"forrest gump" 95.7), 0.95 x `fuzz.token_sort_ratio` (word order) and a *containment* score:
the share of the query's characters found in the title's words (a word of 4+ letters may
match a close word, "forest" ~ "forrest"; the last word may be half typed), scaled like
WRatio's partial scores (x0.95 when the lengths are close, x0.9 when the title is 1.5-8
times longer, x0.6 beyond). The best few hundred are refined with `fuzz.WRatio` weighted by
that word share, because WRatio alone gives 85.5 to any title sharing one word ("the")
with the query.

Speed: WRatio over all titles costs ~150 ms for 90k titles on two cores, so candidates come
from vectorised prefilters instead: the exact/prefix range by binary search on the sorted
keys, an inverted word index whose vocabulary is matched with `process.cdist(...,
fuzz.ratio, score_cutoff=...)` (only over the words whose length can reach the cutoff, and
remembered per query word between calls: while a person types, only the last word is new),
and, only when no title holds (nearly) all the query's words,
`fuzz.ratio` over the keys of a compatible length (joined words: "forrestgump"). Only those
few thousand candidates are scored: on a 90k-title catalogue a keystroke takes ~3-5 ms of CPU,
at worst ~20 ms (one core, `benchmarks/catalogue.py`), and building the index ~2-3 s.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process

from recengine.data.dataset import parse_title

__all__ = ["TitleMatch", "TitleSearch", "normalize_title", "MAX_QUERY_CHARS"]

#: Longer queries are cut to this many characters (the longest MovieLens title has 158).
MAX_QUERY_CHARS = 200
#: Articles MovieLens moves to the end of a title ("Matrix, The"); `display_title` uses the same list.
_TRAILING_ARTICLES = ("the", "a", "an", "les", "la", "le", "l'", "il", "das", "der", "die", "el", "los", "las")
#: Articles dropped from the front of a key. Only English ones: "Die Hard" and "La Bamba" keep theirs.
_LEADING_ARTICLES = ("the", "a", "an")

_TIER_EXACT, _TIER_PREFIX, _TIER_FUZZY = 3, 2, 1
_YEAR_PENALTY = 10.0
_WORD_CANDIDATES = 1000  # candidates taken from the word index (most words, then most popular)
_PREFIX_CANDIDATES = 500  # candidates taken from a long prefix range (most popular)
_RATIO_CANDIDATES = 200  # candidates taken from the plain ratio over all keys (fallback)
_RATIO_CUTOFF = 50.0  # score_cutoff of that fallback
_FALLBACK_COVERAGE = 0.85  # run the fallback when no key holds this share of the query's words
_REFINE = 200  # best candidates refined with WRatio
_WORD_CACHE_SIZE = 512  # query words whose close vocabulary words are remembered between calls

_DROP = re.compile(r"[\'\u2019\u2018`.]")
_NON_WORD = re.compile(r"[\W_]+")
_TRAILING_ARTICLE = re.compile(r",\s*(" + "|".join(re.escape(a) for a in _TRAILING_ARTICLES) + r")\s*$", re.IGNORECASE)
_QUERY_YEAR = re.compile(r"^(?P<name>.*?)[\s,]*\(?\s*(?P<year>(?:18[89]|19\d|20\d)\d)\s*\)?\s*$", re.DOTALL)
_ROMAN_VALUE = {
    numeral: str(value)
    for value, numeral in enumerate(
        "i ii iii iv v vi vii viii ix x xi xii xiii xiv xv xvi xvii xviii xix xx".split(), start=1
    )
}
_ROMAN = re.compile(r"\b(?:" + "|".join(sorted(_ROMAN_VALUE, key=len, reverse=True)) + r")\b")
_AKA = re.compile(r"^\s*(?:a\.?k\.?a\.?|also known as)\s+", re.IGNORECASE)


@dataclass(frozen=True)
class TitleMatch:
    """One search hit: the item's index in the catalogue, its display title and a 0-100 score.

    `exact` is True when the normalised query equals one of the item's normalised titles
    (and the year matches when the query gave one).
    """

    item_idx: int
    title: str
    score: float
    exact: bool = False


def _fold(text: str) -> str:
    """Lower case, accents removed, '&' spelled out, apostrophes and dots dropped, other
    punctuation and whitespace collapsed to single spaces, roman numerals I-XX as digits
    ("Episode IV" and "episode 4" both give "episode 4")."""
    if not text.isascii():
        text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    text = text.casefold().replace("&", " and ")
    text = _NON_WORD.sub(" ", _DROP.sub("", text)).strip()
    return _ROMAN.sub(lambda found: _ROMAN_VALUE[found.group(0)], text)


def _drop_leading_article(key: str) -> str:
    head, _, rest = key.partition(" ")
    return rest if head in _LEADING_ARTICLES and rest else key


def normalize_title(text: str) -> str:
    """The search key of a title or query: "Matrix, The" and "the Matrix!" both give "matrix".

    A trailing article after a comma is dropped, then accents/case/punctuation are folded
    (see `_fold`) and a leading English article is removed (when something remains).
    """
    return _drop_leading_article(_fold(_TRAILING_ARTICLE.sub("", text)))


def _title_keys(raw_title: str) -> tuple[int | None, list[str]]:
    """(year, distinct keys) of one catalogue title, main title first.

    "Flower of My Secret, The (Flor de mi secreto, La) (1995)" gives 1995 and
    ["flower of my secret", "flor de mi secreto", "la flor de mi secreto"]: every
    parenthesised alternative is a key too, and a non-English article moved to the end
    is also kept in front (people type "la promesse" as often as "promesse").
    """
    name, year = parse_title(raw_title)
    parts: list[str] = []
    main = name
    while main.endswith(")") and " (" in main:
        start = main.rfind(" (")
        parts.insert(0, _AKA.sub("", main[start + 2 : -1]))
        main = main[:start]
    parts.insert(0, main)
    keys: list[str] = []
    for part in parts:
        variants = [normalize_title(part)]
        article = _TRAILING_ARTICLE.search(part)
        if article and article.group(1).lower() not in _LEADING_ARTICLES:
            variants.append(_fold(f"{article.group(1)} {part[: article.start()]}"))
        for key in variants:
            if key and key not in keys:
                keys.append(key)
    if not keys:  # a title made only of punctuation still gets a (possibly empty) key
        keys.append(_fold(name))
    return year, keys


def _clean_query(query: object) -> str:
    """The query as safe text: a string, at most MAX_QUERY_CHARS, control characters as spaces."""
    text = query if isinstance(query, str) else ("" if query is None else str(query))
    text = text[:MAX_QUERY_CHARS]
    return "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)


class TitleSearch:
    """Fuzzy search over the titles of one catalogue (built once, then queried per keystroke).

    `catalogue` is `Dataset.catalogue` (row i describes item index i) or any DataFrame with
    a `title` column (MovieLens form, "Matrix, The (1999)") or a `display_title` column;
    optional `display_title` (shown in results), `year` and `popularity` (tie-break) columns
    are used when present. The index is immutable after construction and the object is safe
    to share between threads.

    `word_cache_size`: how many query words' close vocabulary words (the fuzzy word match, the
    costly part of a query) are remembered between calls, least recently used dropped first.
    While a person types, only the last word changes, so the earlier words come from the
    cache; 0 turns the cache off. Results never depend on it.
    """

    def __init__(self, catalogue: pd.DataFrame, word_cache_size: int = _WORD_CACHE_SIZE) -> None:
        if isinstance(word_cache_size, bool) or not isinstance(word_cache_size, (int, np.integer)) or word_cache_size < 0:
            raise ValueError(f"word_cache_size must be a non-negative integer (0: no cache), got {word_cache_size!r}")
        if "title" not in catalogue.columns and "display_title" not in catalogue.columns:
            raise ValueError(
                f"catalogue needs a 'title' or 'display_title' column, got columns {list(catalogue.columns)}"
            )
        raw = catalogue["title"] if "title" in catalogue.columns else catalogue["display_title"]
        raw_titles = ["" if pd.isna(t) else str(t) for t in raw.tolist()]
        shown = catalogue["display_title"] if "display_title" in catalogue.columns else raw
        self._display = np.asarray(["" if pd.isna(t) else str(t) for t in shown.tolist()], dtype=object)
        n_items = len(raw_titles)
        if "popularity" in catalogue.columns:
            popularity = pd.to_numeric(catalogue["popularity"], errors="coerce").fillna(0).to_numpy(np.float64)
        else:
            popularity = np.zeros(n_items)

        keys: list[str] = []
        key_item: list[int] = []
        key_year: list[int] = []
        for item, title in enumerate(raw_titles):
            year, item_keys = _title_keys(title)
            keys.extend(item_keys)
            key_item.extend([item] * len(item_keys))
            key_year.extend([-1 if year is None else year] * len(item_keys))
        if "year" in catalogue.columns:  # the catalogue's own year wins over the parsed one
            years = pd.to_numeric(catalogue["year"], errors="coerce").to_numpy(np.float64)
            item_year = np.where(np.isnan(years), -1, years).astype(np.int32)
            parsed = np.asarray(key_year, dtype=np.int32)
            from_catalogue = item_year[np.asarray(key_item, dtype=np.int64)] if keys else parsed
            key_year = np.where(from_catalogue >= 0, from_catalogue, parsed).tolist()

        self._keys: list[str] = keys
        self._key_array = np.asarray(keys, dtype=object)
        self._key_item = np.asarray(key_item, dtype=np.int64)
        self._key_year = np.asarray(key_year, dtype=np.int32)
        self._key_popularity = popularity[self._key_item] if keys else np.zeros(0)
        self._item_popularity = popularity

        self._key_length = np.fromiter((len(key) for key in keys), dtype=np.float64, count=len(keys))
        # Keys by length, so the ratio fallback only looks at keys long enough to reach its cutoff.
        self._by_length = np.argsort(self._key_length, kind="stable")
        self._sorted_lengths = self._key_length[self._by_length]
        self._keys_by_length: list[str] = [keys[i] for i in self._by_length.tolist()]

        # Sorted keys for the exact / prefix ranges; a key's position tells its range at once.
        order = np.argsort(self._key_array, kind="stable") if keys else np.zeros(0, dtype=np.int64)
        self._sorted_order = order.astype(np.int64)
        self._sorted_keys: list[str] = [keys[i] for i in order.tolist()]
        self._sorted_position = np.empty(len(keys), dtype=np.int64)
        self._sorted_position[self._sorted_order] = np.arange(len(keys))

        # Inverted word index: vocabulary -> key indices (CSR).
        words_of_key = [set(key.split()) for key in keys]
        vocab = sorted(set().union(*words_of_key)) if keys else []
        word_id = {word: index for index, word in enumerate(vocab)}
        pairs_word = np.fromiter((word_id[w] for ws in words_of_key for w in ws), dtype=np.int64)
        pairs_key = np.repeat(np.arange(len(keys), dtype=np.int64), [len(ws) for ws in words_of_key])
        by_word = np.argsort(pairs_word, kind="stable")
        self._postings = pairs_key[by_word]
        self._postings_indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.cumsum(np.bincount(pairs_word, minlength=len(vocab)), out=self._postings_indptr[1:])
        self._vocab: list[str] = vocab
        # The vocabulary by length, so a fuzzy word match only scores words long enough to reach its cutoff.
        vocab_length = np.fromiter((len(word) for word in vocab), dtype=np.int64, count=len(vocab))
        self._vocab_by_length = np.argsort(vocab_length, kind="stable")
        self._vocab_sorted_lengths = vocab_length[self._vocab_by_length]
        self._vocab_list_by_length: list[str] = [vocab[i] for i in self._vocab_by_length.tolist()]

        self._word_cache_size = int(word_cache_size)
        self._word_cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._word_cache_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._display)

    def __repr__(self) -> str:
        return f"<TitleSearch ({len(self)} titles, {len(self._keys)} keys, {len(self._vocab)} words)>"

    # --- public API -----------------------------------------------------------------------------
    def search(self, query: str, limit: int = 10, min_score: float = 50.0) -> list[TitleMatch]:
        """The best `limit` titles for `query`, best first (see the module docstring for the order).

        Titles scoring below `min_score` are left out. Empty, blank or unreadable queries give
        an empty list; queries longer than MAX_QUERY_CHARS are cut. Never raises on odd text.
        """
        items, scores, tiers = self._rank(query, max(0, int(limit)), float(min_score))
        return [
            TitleMatch(int(item), str(self._display[item]), float(score), bool(tier == _TIER_EXACT))
            for item, score, tier in zip(items.tolist(), scores.tolist(), tiers.tolist())
        ]

    def best_match(self, query: str, min_score: float = 50.0) -> TitleMatch | None:
        """The first result of `search(query)`, or None when nothing scores `min_score` or more."""
        found = self.search(query, limit=1, min_score=min_score)
        return found[0] if found else None

    def resolve(
        self, query: str, limit: int = 5, accept_score: float = 80.0, margin: float = 3.0
    ) -> tuple[TitleMatch | None, list[TitleMatch], bool]:
        """Pick one title for `query` for "did you mean": (match, candidates, ambiguous).

        `candidates` are the best `limit` results. `match` is the top candidate when it is an
        exact match or scores at least `accept_score`; else None (nothing close enough; the
        candidates are then the closest suggestions). `ambiguous` is True when a match was
        found, it is not exact, and another candidate scores within `margin` points of it
        ("star wars" on a catalogue of Episodes I-VII): `match` is then the most popular of
        those, and a caller should let the person choose.
        """
        candidates = self.search(query, limit=max(1, int(limit)))
        if not candidates:
            return None, [], False
        top = candidates[0]
        if top.exact:
            return top, candidates, False
        if top.score < accept_score:
            return None, candidates, False
        ambiguous = sum(1 for c in candidates if top.score - c.score <= margin) > 1
        return top, candidates, ambiguous

    # --- ranking ----------------------------------------------------------------------------------
    def _query_forms(self, query: object) -> list[tuple[str, int | None]]:
        """The query's readings as (key, year): the whole query ("blade runner 2049", "1984"),
        and, when it ends in a plausible year, its name with that year ("star wars", 1977)."""
        text = _clean_query(query)
        found = _QUERY_YEAR.match(text)
        name = normalize_title(found.group("name")) if found else ""
        whole = f"{name} {found.group('year')}" if name else normalize_title(text)
        forms: list[tuple[str, int | None]] = [(whole, None)] if whole else []
        if name:
            forms.append((name, int(found.group("year"))))
        return forms

    def _key_ranges(self, key: str) -> tuple[int, int, int]:
        """Positions in the sorted keys: [low, equal_high) equal `key`, [low, high) start with it."""
        low = bisect_left(self._sorted_keys, key)
        equal_high = bisect_right(self._sorted_keys, key)
        high = bisect_left(self._sorted_keys, key + "\U0010ffff")
        return low, equal_high, high

    def _prefix_candidates(self, low: int, high: int) -> np.ndarray:
        """Keys in the sorted range [low, high); the _PREFIX_CANDIDATES most popular when longer."""
        found = self._sorted_order[low:high]
        if len(found) > _PREFIX_CANDIDATES:
            found = found[np.argpartition(-self._key_popularity[found], _PREFIX_CANDIDATES)[:_PREFIX_CANDIDATES]]
        return found

    def _word_similarity(self, word: str, last: bool, cache: dict) -> np.ndarray:
        """How well each vocabulary word stands for query `word`: (n_vocab,) float64 in 0..1.

        1 for the same word, or, when `last` (perhaps half typed) and 2+ characters long, a
        word starting with it; for words of 4+ characters a close word counts as its
        `fuzz.ratio` / 100 when that is at least 0.75 (4 letters) or 0.8 (5+).
        """
        if (word, last) in cache:
            return cache[word, last]
        similarity = np.zeros(len(self._vocab))
        if len(word) >= 4:  # the fuzzy part does not depend on `last`
            close, scores = self._close_words(word)
            similarity[close] = scores / 100.0
        low, high = bisect_left(self._vocab, word), bisect_left(self._vocab, word + "\U0010ffff")
        if last and len(word) >= 2:
            similarity[low:high] = 1.0
        elif low < len(self._vocab) and self._vocab[low] == word:
            similarity[low] = 1.0
        cache[word, last] = similarity
        return similarity

    def _close_words(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        """The vocabulary words within `fuzz.ratio` reach of `word` (4+ characters): (vocabulary
        indices (h,) int64 ascending, their ratio (h,) uint8), those scoring at least 75 (4
        characters) or 80 (5+). Remembered for the last `word_cache_size` words.

        Only words whose length can reach the cutoff are scored: ratio = 2 x matches / (a + b)
        >= r needs the other length within [a r / (2 - r), a (2 - r) / r] (the bounds are
        widened a little against rounding; a word outside them scores below the cutoff anyway).
        """
        with self._word_cache_lock:
            found = self._word_cache.get(word)
            if found is not None:
                self._word_cache.move_to_end(word)
                return found
        cutoff = 75 if len(word) == 4 else 80
        share = cutoff / 100.0
        low = int(np.searchsorted(self._vocab_sorted_lengths, len(word) * share / (2.0 - share) - 1e-6, side="left"))
        high = int(np.searchsorted(self._vocab_sorted_lengths, len(word) * (2.0 - share) / share + 1e-6, side="right"))
        scores = process.cdist(
            [word], self._vocab_list_by_length[low:high], scorer=fuzz.ratio, score_cutoff=cutoff, dtype=np.uint8, workers=1
        )[0]
        hits = np.flatnonzero(scores)
        close = self._vocab_by_length[low + hits]
        order = np.argsort(close)
        found = (close[order], scores[hits][order])
        for array in found:
            array.flags.writeable = False
        if self._word_cache_size:
            with self._word_cache_lock:
                self._word_cache[word] = found
                self._word_cache.move_to_end(word)
                while len(self._word_cache) > self._word_cache_size:
                    self._word_cache.popitem(last=False)
        return found

    def _word_coverage(self, key: str, cache: dict) -> np.ndarray:
        """For every key, the share of the query's characters in words the key contains:
        (n_keys,) float64 in 0..1, each query word weighted by `_word_similarity`."""
        coverage = np.zeros(len(self._keys))
        words = list(dict.fromkeys(key.split()))
        if not words or not self._vocab:
            return coverage
        total = float(sum(len(word) for word in words))
        for row, word in enumerate(words):
            similarity = self._word_similarity(word, row == len(words) - 1, cache)
            hits = np.flatnonzero(similarity)
            if not len(hits):
                continue
            starts, ends = self._postings_indptr[hits], self._postings_indptr[hits + 1]
            postings = np.concatenate([self._postings[a:b] for a, b in zip(starts.tolist(), ends.tolist())])
            best = np.zeros(len(self._keys))
            np.maximum.at(best, postings, np.repeat(similarity[hits], ends - starts))
            coverage += best * (len(word) / total)
        return coverage

    def _word_candidates(self, coverage: np.ndarray) -> np.ndarray:
        """Up to _WORD_CANDIDATES keys with the highest coverage (then popularity)."""
        hits = np.flatnonzero(coverage)
        if len(hits) > _WORD_CANDIDATES:
            popularity = self._key_popularity[hits]
            weight = np.round(coverage[hits], 6) * (popularity.max() + 1.0) + popularity
            hits = hits[np.argpartition(-weight, _WORD_CANDIDATES)[:_WORD_CANDIDATES]]
        return hits

    def _ratio_candidates(self, key: str) -> np.ndarray:
        """The keys closest to `key` by plain `fuzz.ratio` over all keys (catches joined words).

        Only keys whose length can reach the cutoff are scored: ratio = 2 x matches / (a + b)
        >= r needs the other length within [a r / (2 - r), a (2 - r) / r].
        """
        share = _RATIO_CUTOFF / 100.0
        low = int(np.searchsorted(self._sorted_lengths, len(key) * share / (2.0 - share), side="left"))
        high = int(np.searchsorted(self._sorted_lengths, len(key) * (2.0 - share) / share, side="right"))
        if low >= high:
            return np.zeros(0, dtype=np.int64)
        scores = process.cdist(
            [key], self._keys_by_length[low:high], scorer=fuzz.ratio, score_cutoff=_RATIO_CUTOFF, dtype=np.uint8, workers=-1
        )[0]
        hits = np.flatnonzero(scores)
        if len(hits) > _RATIO_CANDIDATES:
            hits = hits[np.argpartition(-scores[hits].astype(np.int16), _RATIO_CANDIDATES)[:_RATIO_CANDIDATES]]
        return self._by_length[low + hits]

    def _rank(self, query: object, limit: int, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(item indices int64, scores float64, tiers int64) of the best `limit` items, best first."""
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64))
        forms = self._query_forms(query)
        if not forms or limit == 0 or not self._keys:
            return empty

        ranges, coverages, pools, cache = [], [], [], {}
        for key, _ in forms:
            ranges.append(self._key_ranges(key))
            coverages.append(self._word_coverage(key, cache))
            low, _, high = ranges[-1]
            pools += [self._prefix_candidates(low, high), self._word_candidates(coverages[-1])]
        if max(float(c.max()) for c in coverages) < _FALLBACK_COVERAGE:
            pools += [self._ratio_candidates(key) for key, _ in forms]
        candidates = np.unique(np.concatenate(pools))
        if len(candidates) == 0:
            return empty
        cand_keys = self._key_array[candidates].tolist()
        queries = [key for key, _ in forms]
        plain = process.cdist(queries, cand_keys, scorer=fuzz.ratio, dtype=np.float32, workers=1)
        ordered = process.cdist(queries, cand_keys, scorer=fuzz.token_sort_ratio, dtype=np.float32, workers=1)
        position = self._sorted_position[candidates]
        length = self._key_length[candidates]
        years = self._key_year[candidates]

        scores, tiers, weights = [], [], []
        for row, (key, year) in enumerate(forms):
            low, equal_high, high = ranges[row]
            coverage = coverages[row][candidates]
            length_ratio = np.maximum(length, len(key)) / np.maximum(np.minimum(length, len(key)), 1.0)
            scale = np.where(length_ratio < 1.5, 0.95, np.where(length_ratio < 8, 0.9, 0.6))
            score = np.maximum.reduce([plain[row], 0.95 * ordered[row], 100.0 * coverage * scale]).astype(np.float64)
            is_exact = (position >= low) & (position < equal_high)
            tier = np.where(is_exact, _TIER_EXACT, np.where((position >= low) & (position < high), _TIER_PREFIX, _TIER_FUZZY))
            scores.append(np.where(is_exact, 100.0, score))
            tiers.append(tier)
            weights.append(0.5 + 0.5 * coverage)

        # refine the best few with WRatio (weighted by word coverage), exact matches stay 100
        best = np.max([t * 1000.0 + s for t, s in zip(tiers, scores)], axis=0)
        top = np.argsort(-best, kind="stable")[:_REFINE]
        refined = process.cdist(queries, [cand_keys[i] for i in top.tolist()], scorer=fuzz.WRatio, dtype=np.float32, workers=1)
        for row in range(len(forms)):
            boosted = refined[row] * weights[row][top]
            keep_exact = tiers[row][top] == _TIER_EXACT
            scores[row][top] = np.where(keep_exact, 100.0, np.maximum(scores[row][top], boosted))

        best_rank = np.full(len(candidates), -np.inf)
        best_score = np.zeros(len(candidates))
        best_tier = np.zeros(len(candidates), dtype=np.int64)
        for row, (_, year) in enumerate(forms):
            score, tier = scores[row], tiers[row]
            if year is not None:
                other_year = years != year
                score = np.where(other_year, np.maximum(score - _YEAR_PENALTY, 0.0), score)
                tier = np.where(other_year & (tier == _TIER_EXACT), _TIER_PREFIX, tier)
            score = np.round(score, 1)
            rank = tier * 1000.0 + score
            better = rank > best_rank
            best_rank = np.where(better, rank, best_rank)
            best_score = np.where(better, score, best_score)
            best_tier = np.where(better, tier, best_tier)

        keep = best_score >= min_score
        candidates, best_rank, best_score, best_tier = candidates[keep], best_rank[keep], best_score[keep], best_tier[keep]
        items = self._key_item[candidates]
        # best first: rank, then popularity, then item index; then one row per item (its best key)
        order = np.lexsort((items, -self._item_popularity[items], -best_rank))
        items, best_score, best_tier = items[order], best_score[order], best_tier[order]
        _, first = np.unique(items, return_index=True)
        first = np.sort(first)[:limit]
        return items[first], best_score[first], best_tier[first]
