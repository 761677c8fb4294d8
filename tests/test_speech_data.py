"""The speech data layer: features, audio reading (wav and NIST SPHERE), the TIMIT / folder /
JapaneseVowels loaders, the espeak-ng corpus generator and load_speech end to end."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from cmisweep.data.speech import SpeechData, load_speech, locate
from cmisweep.data.speech.corpora import (
    folder_utterances,
    japanese_vowels,
    read_audio,
    timit_utterances,
)
from cmisweep.data.speech.features import (
    LOG_EPS,
    N_BINS,
    frame_count,
    log_spectrogram,
    segment_count,
    segments,
)
from cmisweep.data.speech.synth import synth_corpus
from cmisweep.errors import DataError


def write_sphere(path, samples: np.ndarray, rate: int = 16000, coding: str = "pcm"):
    """A NIST SPHERE file as TIMIT ships it: 1024-byte NIST_1A header, int16 little-endian PCM."""
    x = np.asarray(samples, dtype="<i2")
    header = (
        "NIST_1A\n   1024\n"
        f"sample_count -i {len(x)}\nsample_rate -i {rate}\nchannel_count -i 1\nsample_n_bytes -i 2\n"
        f"sample_coding -s{len(coding)} {coding}\nsample_byte_format -s2 01\nend_head\n"
    ).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.ljust(1024, b" ") + x.tobytes())
    return path


def tone(seconds: float, hz: float, rate: int = 16000, amp: float = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.round(amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def f0(x: np.ndarray, rate: int = 16000) -> float:
    """Median pitch of the loud 40 ms frames by autocorrelation, 60-400 Hz."""
    size, out = 640, []
    for i in range(0, len(x) - size, size):
        s = x[i:i + size] - x[i:i + size].mean()
        if np.sqrt((s ** 2).mean()) < 0.03:
            continue
        ac = np.correlate(s, s, "full")[size - 1:]
        lo, hi = rate // 400, rate // 60
        out.append(rate / (lo + np.argmax(ac[lo:hi])))
    return float(np.median(out))


# ---- features ---------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [400, 3199, 3200, 16000, 16160 + 37])
def test_framing_gives_one_frame_per_hop_and_drops_the_tail(n):
    spec = log_spectrogram(np.zeros(n, np.float32))
    assert spec.shape == (1 + n // 160, N_BINS) == (frame_count(n), 201)
    seg = segments(spec, 20)
    assert seg.shape == (frame_count(n) // 20, 20, 201) and len(seg) == segment_count(n)
    assert torch.equal(seg.reshape(-1, 201), spec[: len(seg) * 20])
    assert torch.allclose(spec, torch.full_like(spec, np.log(LOG_EPS)))  # silence sits on the epsilon floor


@pytest.mark.parametrize("hz, bin_", [(1000, 25), (3000, 75), (440, 11)])
def test_a_sine_peaks_at_its_bin(hz, bin_):
    spec = log_spectrogram(tone(0.5, hz) / 32768.0)
    assert spec.shape[1] == 201
    assert int(spec[5:-5].mean(0).argmax()) == bin_  # bins are 40 Hz apart; 440 Hz is nearest bin 11


# ---- reading audio ----------------------------------------------------------------------------

def test_sphere_file_reads_back_equal(tmp_path):
    x = tone(0.3, 300) + np.arange(4800, dtype=np.int16) % 7
    y, rate = read_audio(write_sphere(tmp_path / "SA1.WAV", x))
    assert rate == 16000 and y.dtype == np.float32
    assert np.array_equal(np.round(y * 32768).astype(np.int16), x)
    y8, rate8 = read_audio(write_sphere(tmp_path / "low.wav", tone(0.5, 300, rate=8000), rate=8000))
    assert rate8 == 16000 and len(y8) == 8000  # resampled to 16 kHz


def test_shorten_sphere_and_broken_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"SX9\.WAV.*shorten.*uncompressed PCM"):
        read_audio(write_sphere(tmp_path / "SX9.WAV", tone(0.1, 200), coding="pcm,embedded-shorten-v2.00"))
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.wav: cannot read audio.*expected a wav"):
        read_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(DataError, match=r"junk\.wav: cannot read audio"):
        read_audio(tmp_path / "junk.wav")
    sf.write(tmp_path / "none.wav", np.zeros(0, np.int16), 16000, subtype="PCM_16")
    with pytest.raises(DataError, match=r"none\.wav: the audio file holds no samples"):
        read_audio(tmp_path / "none.wav")


# ---- corpus loaders ---------------------------------------------------------------------------

def _timit_tree(root, upper=True):
    c = str.upper if upper else str.lower
    layout = {("TRAIN", "DR1", "FCJF0"): ["SA1", "SI1027"], ("TRAIN", "DR2", "MABC0"): ["SA1", "SX12"],
              ("TEST", "DR1", "MDAB0"): ["SA1"], ("TEST", "DR3", "FXYZ1"): ["SI5", "SX7"]}
    for (split, region, spk), utts in layout.items():
        for utt in utts:
            write_sphere(root / c(split) / c(region) / c(spk) / c(f"{utt}.WAV"), tone(0.25, 150))
            (root / c(split) / c(region) / c(spk) / c(f"{utt}.PHN")).write_text("0 100 h#\n")
    return root


@pytest.mark.parametrize("upper", [True, False])
def test_timit_loader_reads_the_ldc_layout(tmp_path, upper):
    table = timit_utterances(_timit_tree(tmp_path, upper))
    assert list(table.columns) == ["utterance", "speaker", "gender", "split", "path"]
    assert len(table) == 7 and table["utterance"].is_unique  # .PHN files ignored
    by_spk = table.groupby("speaker").agg({"gender": "first", "split": "first"})
    assert by_spk.to_dict("index") == {"FCJF0": {"gender": "F", "split": "train"},
                                       "MABC0": {"gender": "M", "split": "train"},
                                       "MDAB0": {"gender": "M", "split": "test"},
                                       "FXYZ1": {"gender": "F", "split": "test"}}
    assert "FCJF0/SI1027" in set(table["utterance"])
    assert read_audio(table["path"].iloc[0])[0].shape == (4000,)
    with pytest.raises(DataError, match="not a TIMIT tree"):
        timit_utterances(tmp_path / ("TRAIN" if upper else "train"))


def _folder(root, speakers=8, utts=2):
    for i in range(speakers):
        for j in range(utts):
            d = root / f"spk{i}"
            d.mkdir(parents=True, exist_ok=True)
            sf.write(d / f"u{j}.{'flac' if j else 'wav'}", tone(0.25, 100 + 10 * i), 16000, subtype="PCM_16")
    return root


def test_folder_loader_splits_by_speaker_with_a_seed(tmp_path):
    root = _folder(tmp_path / "corpus")
    table = folder_utterances(root, split_seed=3)
    assert len(table) == 16 and table["gender"].isna().all()
    split = table.groupby("speaker")["split"].agg(set)
    assert all(len(s) == 1 for s in split)  # a speaker is in one split only
    assert sorted(table.drop_duplicates("speaker")["split"]) == ["test"] * 2 + ["train"] * 6
    assert table.equals(folder_utterances(root, split_seed=3))


def test_folder_loader_takes_gender_and_split_from_speakers_csv(tmp_path):
    root = _folder(tmp_path / "corpus", speakers=3)
    pd.DataFrame({"speaker": ["spk0", "spk1", "spk2"], "gender": ["F", "M", "F"],
                  "split": ["test", "train", "train"]}).to_csv(root / "speakers.csv", index=False)
    table = folder_utterances(root)
    assert table.drop_duplicates("speaker").set_index("speaker")[["gender", "split"]].to_dict("index") == {
        "spk0": {"gender": "F", "split": "test"}, "spk1": {"gender": "M", "split": "train"},
        "spk2": {"gender": "F", "split": "train"}}
    pd.DataFrame({"speaker": ["spk0"], "split": ["test"]}).to_csv(root / "speakers.csv", index=False)
    with pytest.raises(DataError, match=r"speakers\.csv: speakers spk1, spk2 have audio but no row"):
        folder_utterances(root)


def test_japanese_vowels_real_set():
    from conftest import need_data

    root = need_data("japanese-vowels")
    table, arrays = japanese_vowels(root)
    assert (table["split"] == "train").sum() == 270 and (table["split"] == "test").sum() == 370
    assert sorted(table["speaker"].unique()) == [str(i) for i in range(1, 10)] and set(table["gender"]) == {"M"}
    assert all(a.shape[1] == 12 and 7 <= a.shape[0] <= 29 for a in arrays)
    assert {len(a) for a in arrays} >= {7, 29}
    data = load_speech("japanese-vowels")  # found through $CMISWEEP_DATA
    assert data.train_x.shape[1:] == (7, 12) and data.test_x.shape[1:] == (7, 12)
    assert set(data.utterances["split"]) == {"train", "val", "test"}


def test_japanese_vowels_bad_file_names_it(tmp_path):
    (tmp_path / "JapaneseVowels_TRAIN.ts").write_text("@problemName x\n@data\n1,2:3,4:1\n")
    with pytest.raises(DataError, match=r"JapaneseVowels_TRAIN\.ts: line 3: expected 12 dimensions"):
        japanese_vowels(tmp_path)
    (tmp_path / "JapaneseVowels_TRAIN.ts").write_text("@data\n" + ":".join(["1,2"] * 12) + ":3\n")
    with pytest.raises(DataError, match=r"JapaneseVowels_TEST\.ts: JapaneseVowels file not found"):
        japanese_vowels(tmp_path)
    (tmp_path / "JapaneseVowels_TEST.ts").write_text("@data\n" + ":".join(["1,2"] * 11 + ["1,x"]) + ":3\n")
    with pytest.raises(DataError, match=r"JapaneseVowels_TEST\.ts: line 2: .*not a number"):
        japanese_vowels(tmp_path)


# ---- the espeak-ng corpus ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    return synth_corpus(tmp_path_factory.mktemp("synth") / "speech-synth", speakers=6, utterances=3, seed=0)


def test_generator_is_deterministic_and_complete(synth_dir, tmp_path):
    stale = tmp_path / ".again.partial"  # left by an interrupted run: replaced, never shipped
    stale.mkdir()
    (stale / "junk").write_text("x")
    again = synth_corpus(tmp_path / "again", speakers=6, utterances=3, seed=0, workers=1)
    files = sorted(p.relative_to(synth_dir) for p in synth_dir.rglob("*") if p.is_file())
    assert len(files) == 6 * 3 + 2
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((synth_dir / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert not stale.exists() and not (tmp_path / ".again").exists()
    info = sf.info(next(synth_dir.rglob("*.wav")))
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "PCM_16"
    other = synth_corpus(tmp_path / "other", speakers=6, utterances=3, seed=1)
    assert (other / "speakers.csv").read_bytes() != (synth_dir / "speakers.csv").read_bytes()
    with pytest.raises(DataError, match="already exists and is not empty"):
        synth_corpus(again, speakers=2, utterances=1)


def test_generator_speakers_split_genders_and_sentences(synth_dir):
    spk = pd.read_csv(synth_dir / "speakers.csv")
    utt = pd.read_csv(synth_dir / "utterances.csv")
    assert sorted(spk["gender"]) == ["F"] * 3 + ["M"] * 3
    assert set(spk.loc[spk["split"] == "test", "gender"]) == {"F", "M"}  # a test split with both genders
    train, test = set(spk.loc[spk["split"] == "train", "speaker"]), set(spk.loc[spk["split"] == "test", "speaker"])
    assert train and test and not train & test and train | test == set(spk["speaker"])
    assert ((spk["gender"] == "F") == (spk["pitch"] > 150)).all() and spk["speed"].between(130, 190).all()
    shared = utt[utt["utterance"].isin(["sa1", "sa2"])].groupby("utterance")["text"].nunique()
    assert shared.to_dict() == {"sa1": 1, "sa2": 1}  # read by every speaker, like TIMIT's SA
    assert utt.loc[utt["utterance"] == "si03", "text"].nunique() == 6
    assert utt["text"].str.split().str.len().between(6, 12).all()
    table = folder_utterances(synth_dir)
    assert table.drop_duplicates("speaker").set_index("speaker")["split"].to_dict() == \
        spk.set_index("speaker")["split"].to_dict()


def test_generator_speakers_sound_different(synth_dir):
    table = folder_utterances(synth_dir)
    means, pitch = [], []
    for path in table["path"]:
        x, _ = read_audio(path)
        spec = log_spectrogram(x)
        energy = spec.exp().sum(1)
        means.append(spec[energy > 0.05 * energy.max()].mean(0).numpy())  # voiced, loud frames
        pitch.append(f0(x))
    means, pitch = np.array(means), np.array(pitch)
    spk, gender = table["speaker"].to_numpy(), table["gender"].to_numpy()
    assert pitch[gender == "F"].min() > pitch[gender == "M"].max() + 20
    dist = np.sqrt(((means[:, None] - means[None]) ** 2).sum(-1))
    for s in set(spk):
        own, rest = spk == s, spk != s
        within = dist[np.ix_(own, own)][~np.eye(own.sum(), dtype=bool)].mean()
        assert within < dist[np.ix_(own, rest)].mean(), s  # a speaker's utterances are closer to each other


def test_missing_espeak_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DataError, match="apt-get install -y espeak-ng"):
        synth_corpus(tmp_path / "out", speakers=2, utterances=1)
    assert not (tmp_path / "out").exists()


# ---- load_speech ------------------------------------------------------------------------------

def test_load_speech_end_to_end_with_train_only_statistics(synth_dir):
    data = load_speech("speech-synth", synth_dir, val_fraction=0.25, split_seed=0)
    assert isinstance(data, SpeechData)
    for x, u in ((data.train_x, data.train_utt), (data.val_x, data.val_utt), (data.test_x, data.test_utt)):
        assert x.dtype == torch.float32 and x.shape[1:] == (20, 201) and len(x) > 0
        assert u.dtype == torch.int64 and u.shape == (len(x),)
    flat = data.train_x.reshape(-1, 201)
    assert flat.mean(0).abs().max() < 1e-3
    assert torch.allclose(flat.std(0), torch.ones(201), atol=1e-3)
    assert data.feature_mean.shape == data.feature_std.shape == (201,)
    utts = data.utterances
    for name in ("train", "val", "test"):
        rows = utts.iloc[getattr(data, f"{name}_utt").unique().numpy()]
        assert set(rows["split"]) == {name}
    assert (utts["split"] == "val").sum() == 3  # a quarter of the 12 training utterances
    spk = lambda s: set(utts.loc[utts["split"] == s, "speaker"])  # noqa: E731
    assert spk("val") <= spk("train") and not spk("test") & spk("train")
    # the statistics are the raw training features': rebuilt from the files they match
    first = utts.index[utts["split"] == "train"][0]
    raw = segments(log_spectrogram(read_audio(utts.loc[first, "path"])[0]), 20)
    got = data.train_x[data.train_utt == first] * data.feature_std + data.feature_mean
    assert torch.allclose(got, raw, atol=1e-4)
    small = load_speech("speech-synth", synth_dir, max_utterances=2)
    assert small.utterances["split"].value_counts().to_dict() == {"train": 2, "val": 1, "test": 2}
    assert small.to("cpu").train_x.device.type == "cpu"


def test_load_speech_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CMISWEEP_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError, match=r"env/speech-synth.*data/speech-synth.*cmisweep data synth-speech"):
        load_speech("speech-synth")
    with pytest.raises(DataError, match="speech-folder needs an explicit path"):
        load_speech("speech-folder")
    with pytest.raises(DataError, match="does not exist"):
        locate("timit", tmp_path / "nowhere")
    timit = _timit_tree(tmp_path / "env" / "timit")
    assert locate("timit") == timit
    data = load_speech("timit", val_fraction=0.34, segment_frames=5)  # 0.25 s utterances: 26 frames
    assert data.train_x.shape[1:] == (5, 201) and len(data.utterances) == 7
