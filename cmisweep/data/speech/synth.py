"""An open multi-speaker corpus synthesized with espeak-ng (docs/design.md section 4).

Each speaker is a fixed voice: a base English voice (an accent), a gender, a pitch base and range,
a formant scaling (vocal-tract length) and a speaking rate, written as an espeak-ng voice variant.
espeak-ng reads variants only from its data directory, so a private copy of that directory is
made of symlinks with our variants added under voices/!v. Sentences come from a small grammar over
a built-in vocabulary; two are read by every speaker (like TIMIT's SA sentences), the rest are per
speaker. Speakers are split into train and test by a seeded draw stratified by gender, so the two
splits share no speaker (like TIMIT).

Everything is a function of the seed: the same seed gives byte-identical wav and csv files with
the same espeak-ng build. The corpus is built under out.parent/.<name>.partial and renamed to
`out` last, so an interrupted run never leaves a directory that looks complete.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import resample_poly

from cmisweep.errors import DataError

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050  # espeak-ng's fixed output rate; 16000/22050 = 320/441
# Accent -> espeak-ng voice file under <data>/lang. The file, not the language name, is passed to
# -v: espeak-ng 1.51 drops the variant of "en-gb+<variant>" without a word (it resolves en-gb by
# language), while "gmw/en+<variant>" applies it.
BASE_VOICES = {
    "en-us": "gmw/en-US",
    "en-gb": "gmw/en",
    "en-gb-scotland": "gmw/en-GB-scotland",
    "en-gb-x-rp": "gmw/en-GB-x-rp",
    "en-029": "gmw/en-029",
    "en-us-nyc": "gmw/en-US-nyc",
    "en-gb-x-gbclan": "gmw/en-GB-x-gbclan",
    "en-gb-x-gbcwmd": "gmw/en-GB-x-gbcwmd",
}
SHARED_SENTENCES = 2
MIN_WORDS, MAX_WORDS = 6, 12

DETERMINERS = ("the", "a", "my", "our", "this", "that", "every", "some", "her", "his")
ADJECTIVES = (
    "old", "young", "quiet", "bright", "heavy", "small", "green", "yellow", "careful", "lazy",
    "clever", "dusty", "gentle", "hungry", "narrow", "rapid", "silver", "wooden", "muddy", "early",
    "purple", "tired", "famous", "empty", "strange",
)
NOUNS = (
    "farmer", "teacher", "river", "garden", "window", "doctor", "captain", "basket", "letter",
    "kitchen", "mountain", "engine", "painter", "village", "blanket", "orange", "student", "bridge",
    "market", "pencil", "sailor", "candle", "forest", "rabbit", "umbrella", "island", "wagon",
    "singer", "ladder", "meadow", "bottle", "neighbor", "harbor", "engineer", "puppy", "station",
)
TRANSITIVE = (
    "carried", "painted", "found", "watched", "opened", "pushed", "cleaned", "followed", "borrowed",
    "counted", "covered", "visited", "dropped", "noticed", "repaired", "washed", "described", "lifted",
)
INTRANSITIVE = (
    "waited", "slept", "danced", "walked", "shouted", "rested", "wandered", "laughed", "stayed",
    "arrived", "listened", "whistled",
)
PREPOSITIONS = ("near", "behind", "under", "beside", "across", "inside", "above", "around", "beyond", "along")
ADVERBS = ("slowly", "quickly", "quietly", "again", "yesterday", "today", "carefully", "happily", "later")
# Clause shapes; NP = determiner [adjective] noun, PP = preposition NP. With the optional
# adjectives every shape lands in 6-12 words.
TEMPLATES = (
    ("NP", "VT", "NP", "PP"),
    ("NP", "VI", "PP"),
    ("NP", "VT", "NP", "ADV"),
    ("NP", "VI", "ADV", "PP"),
    ("ADV", "NP", "VT", "NP"),
    ("NP", "VI", "PP", "PP"),
    ("PP", "NP", "VT", "NP"),
)


@dataclass(frozen=True)
class Speaker:
    speaker: str
    gender: str  # 'F' | 'M'
    split: str  # 'train' | 'test'
    base_voice: str
    pitch: int  # espeak-ng base pitch, Hz
    pitch_range: int  # Hz above the base that intonation may reach
    formants: tuple[int, ...]  # frequency scale of formants 0-5, percent
    formant_heights: tuple[int, ...]  # amplitude of formants 0-5, percent
    flutter: int
    roughness: int
    speed: int  # words per minute

    @property
    def variant(self) -> str:
        return "cmi" + self.speaker.lower()

    @property
    def voice(self) -> str:
        """The -v argument: base voice file plus our variant."""
        return f"{BASE_VOICES[self.base_voice]}+{self.variant}"

    def variant_file(self) -> str:
        """The espeak-ng voice-variant file: `pitch <base> <top>` in Hz, `formant n freq% height% width%`."""
        lines = [
            "language variant",
            f"name {self.variant}",
            f"gender {'female' if self.gender == 'F' else 'male'}",
            f"pitch {self.pitch} {self.pitch + self.pitch_range}",
            f"flutter {self.flutter}",
            f"roughness {self.roughness}",
        ]
        lines += [f"formant {n} {f} {h} 100" for n, (f, h) in enumerate(zip(self.formants, self.formant_heights))]
        return "\n".join(lines) + "\n"


def _noun_phrase(rng: np.random.Generator) -> list[str]:
    words = [str(rng.choice(DETERMINERS))]
    if rng.random() < 0.5:
        words.append(str(rng.choice(ADJECTIVES)))
    words.append(str(rng.choice(NOUNS)))
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return words


def sentence(rng: np.random.Generator) -> str:
    """One grammatical sentence of MIN_WORDS-MAX_WORDS words, drawn from `rng`."""
    while True:
        words: list[str] = []
        shape = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        for k, part in enumerate(shape):
            if k == 1 and shape[0] == "PP":
                words[-1] += ","  # a fronted phrase takes a comma, which espeak-ng reads as a pause
            if part == "NP":
                words += _noun_phrase(rng)
            elif part == "PP":
                words += [str(rng.choice(PREPOSITIONS))] + _noun_phrase(rng)
            elif part == "VT":
                words.append(str(rng.choice(TRANSITIVE)))
            elif part == "VI":
                words.append(str(rng.choice(INTRANSITIVE)))
            else:
                words.append(str(rng.choice(ADVERBS)))
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            return " ".join(words).capitalize() + "."


def _sentences(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        s = sentence(rng)
        if s not in taken:
            taken.add(s)
            out.append(s)
    return out


def make_speakers(n: int, seed: int, test_fraction: float) -> list[Speaker]:
    """`n` voices, genders balanced, test speakers a seeded draw of `test_fraction` of each gender."""
    rng = np.random.default_rng([seed, 0])
    genders = rng.permutation(np.array(["F", "M"] * ((n + 1) // 2))[:n])
    test = np.zeros(n, dtype=bool)
    for g in ("F", "M"):
        idx = np.flatnonzero(genders == g)
        k = int(round(test_fraction * len(idx)))
        if test_fraction > 0 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)  # both splits keep both genders
        test[rng.permutation(idx)[:k]] = True
    width = max(3, len(str(n - 1)))
    speakers = []
    for i in range(n):
        # one generator per speaker: a voice does not depend on how many speakers come after it
        r = np.random.default_rng([seed, 1, i])
        g = str(genders[i])
        if g == "F":
            pitch, tract = int(r.integers(165, 236)), r.uniform(1.08, 1.20)  # median F0 ~ 180-265 Hz
        else:
            pitch, tract = int(r.integers(80, 126)), r.uniform(0.90, 1.03)  # median F0 ~ 95-150 Hz
        formants = tuple(int(round(100 * tract * r.uniform(0.97, 1.03))) for _ in range(6))
        speakers.append(Speaker(
            speaker=f"{g}{i:0{width}d}",
            gender=g,
            split="test" if test[i] else "train",
            base_voice=list(BASE_VOICES)[int(r.integers(len(BASE_VOICES)))],
            pitch=pitch,
            pitch_range=int(r.integers(25, 61)),
            formants=formants,
            formant_heights=tuple(int(r.integers(85, 116)) for _ in range(6)),
            flutter=int(r.integers(0, 11)),
            roughness=int(r.integers(0, 5)),
            speed=int(r.integers(130, 191)),
        ))
    return speakers


def make_texts(speakers: list[Speaker], utterances: int, seed: int) -> pd.DataFrame:
    """Columns speaker, utterance, text: sa1, sa2 shared by all, si03... drawn per speaker."""
    taken: set[str] = set()
    n_shared = min(SHARED_SENTENCES, utterances)
    shared = _sentences(np.random.default_rng([seed, 2]), n_shared, taken)
    rows = []
    for i, spk in enumerate(speakers):
        own = _sentences(np.random.default_rng([seed, 3, i]), utterances - n_shared, set(taken))
        for k, text in enumerate(shared + own):
            utt = f"sa{k + 1}" if k < n_shared else f"si{k + 1:02d}"
            rows.append({"speaker": spk.speaker, "utterance": utt, "text": text})
    return pd.DataFrame(rows, columns=["speaker", "utterance", "text"])


def speaker_table(voices: list[Speaker]) -> pd.DataFrame:
    """speakers.csv: one row per voice; formantN / heightN are espeak-ng's percent of its default."""
    return pd.DataFrame([{
        "speaker": s.speaker, "gender": s.gender, "split": s.split, "base_voice": s.base_voice,
        "pitch": s.pitch, "pitch_range": s.pitch_range,
        **{f"formant{n}": f for n, f in enumerate(s.formants)},
        **{f"height{n}": h for n, h in enumerate(s.formant_heights)},
        "flutter": s.flutter, "roughness": s.roughness, "speed": s.speed,
    } for s in voices])


def espeak_binary() -> tuple[str, Path]:
    """The espeak-ng executable and its data directory, or a DataError saying how to install it.
    Also checks that every base voice exists: espeak-ng falls back to its default voice silently."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError("espeak-ng not found on PATH; the synthetic speech corpus needs it: "
                        "`apt-get install -y espeak-ng`")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"Data at:\s*(\S+)", out)
    if m is None or not Path(m.group(1), "voices").is_dir():
        raise DataError(f"{exe}: cannot find its data directory (`espeak-ng --version` said {out.strip()!r}); "
                        "reinstall it: `apt-get install -y espeak-ng`")
    missing = [v for v, file in BASE_VOICES.items() if not Path(m.group(1), "lang", file).is_file()]
    if missing:
        raise DataError(f"{m.group(1)}: espeak-ng lacks the voices {', '.join(missing)}; "
                        "reinstall it: `apt-get install -y espeak-ng espeak-ng-data`")
    return exe, Path(m.group(1))


def private_data_dir(system: Path, into: Path, speakers: list[Speaker]) -> Path:
    """A copy of espeak-ng's data directory made of symlinks, with our variants in voices/!v."""
    data = into / "espeak-ng-data"
    (data / "voices" / "!v").mkdir(parents=True)
    for entry in sorted(system.iterdir()):
        if entry.name != "voices":
            (data / entry.name).symlink_to(entry)
    for entry in sorted((system / "voices").iterdir()):
        if entry.name != "!v":
            (data / "voices" / entry.name).symlink_to(entry)
    for spk in speakers:
        (data / "voices" / "!v" / spk.variant).write_text(spk.variant_file())
    return data


def _espeak(exe: str, data: Path, voice: str, speed: int, text: str, wav: Path) -> np.ndarray:
    cmd = [exe, f"--path={data}", "-v", voice, "-s", str(speed), "-w", str(wav), text]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0 or not wav.is_file():
        raise DataError(f"espeak-ng failed on voice {voice} (exit {res.returncode}): {res.stderr.strip()}")
    x, sr = sf.read(wav, dtype="int16")
    wav.unlink()
    if sr != ESPEAK_RATE or x.ndim != 1 or len(x) == 0:
        raise DataError(f"espeak-ng wrote {wav} at {sr} Hz with shape {x.shape}; expected mono {ESPEAK_RATE} Hz audio")
    return x


def to_16k(x: np.ndarray) -> np.ndarray:
    """int16 at 22050 Hz -> int16 at 16 kHz (polyphase, 320/441), clipped rather than wrapped."""
    y = resample_poly(x.astype(np.float64), 320, 441)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def _check_variants_apply(exe: str, data: Path, voices: list[Speaker], scratch: Path) -> None:
    # espeak-ng falls back to the plain voice without a word when it does not apply a variant:
    # catch that once per base voice rather than ship a corpus of identical speakers.
    for spk in {s.base_voice: s for s in voices}.values():
        plain = _espeak(exe, data, BASE_VOICES[spk.base_voice], 160, "hello", scratch / "plain.wav")
        varied = _espeak(exe, data, spk.voice, 160, "hello", scratch / "varied.wav")
        if np.array_equal(plain, varied):
            raise DataError(f"espeak-ng ignored the voice variant {data / 'voices' / '!v' / spk.variant} "
                            f"on {spk.voice}; this espeak-ng build does not read variants from --path")


def synth_corpus(out: Path, speakers: int = 120, utterances: int = 10, seed: int = 0,
                 test_fraction: float = 0.25, workers: int = 2) -> Path:
    """Synthesize `speakers` x `utterances` 16 kHz 16-bit wav files into out/<speaker>/<utterance>.wav
    with out/speakers.csv and out/utterances.csv; returns `out`. Refuses a non-empty `out`."""
    out = Path(out)
    if speakers < 1 or utterances < 1:
        raise DataError(f"{out}: need at least one speaker and one utterance (got {speakers} x {utterances})")
    if not 0 <= test_fraction < 1:
        raise DataError(f"{out}: test_fraction must be in [0, 1) (got {test_fraction})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not empty; remove it or choose another directory")
    exe, system = espeak_binary()
    voices = make_speakers(speakers, seed, test_fraction)
    texts = make_texts(voices, utterances, seed)
    partial = out.parent / f".{out.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted run
    partial.mkdir(parents=True)
    try:
        by_name = {s.speaker: s for s in voices}
        with tempfile.TemporaryDirectory(prefix="cmisweep-espeak-") as tmp:
            data = private_data_dir(system, Path(tmp), voices)
            _check_variants_apply(exe, data, voices, Path(tmp))
            for s in voices:
                (partial / s.speaker).mkdir()

            def one(row) -> None:
                spk = by_name[row.speaker]
                raw = _espeak(exe, data, spk.voice, spk.speed, row.text,
                              Path(tmp) / f"{spk.speaker}-{row.utterance}.wav")
                sf.write(partial / spk.speaker / f"{row.utterance}.wav", to_16k(raw), SAMPLE_RATE,
                         subtype="PCM_16", format="WAV")

            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                list(pool.map(one, texts.itertuples(index=False)))  # list(): re-raise the first failure
        speaker_table(voices).to_csv(partial / "speakers.csv", index=False, lineterminator="\n")
        texts.to_csv(partial / "utterances.csv", index=False, lineterminator="\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-built stays behind
        raise
    if out.exists():
        out.rmdir()  # empty, checked above
    os.rename(partial, out)
    return out
