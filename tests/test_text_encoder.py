"""The text side: CLIP tokenizer from captions, small CLIPTextModel, prompt embeddings, pretrained loading."""

import json
import logging
import random

import pytest
import torch
from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, CLIPTokenizerFast

from ddpm_hub.errors import InputError
from ddpm_hub.text_encoder import (
    FLAG,
    build_clip_tokenizer,
    build_text_encoder,
    encode_prompts,
    load_text_components,
    text_encoder_config,
    tokenize_captions,
)

CAPTIONS = ["a red circle", "a blue square on a white background", "two green triangles.", "A Red Circle!"]
WORDS = ["a", "red", "circle", "blue", "square", "on", "white", "background", "two", "green", "triangles", ".", "!"]
SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer(CAPTIONS)


@pytest.fixture(scope="module")
def encoder(tokenizer):
    return build_text_encoder(tokenizer, seed=0, **SIZES).eval()


def word_tokens(tokenizer, word):
    return tokenizer.convert_ids_to_tokens(tokenizer(word, add_special_tokens=False).input_ids)


# ------------------------------------------------------------------------------------------------ tokenizer
def test_caption_words_are_single_tokens_and_a_red_circle_is_bos_words_eos_pad(tokenizer):
    for word in WORDS:
        assert word_tokens(tokenizer, word) == [word + "</w>"], word
    ids = tokenize_captions(tokenizer, ["a red circle"])
    vocab = tokenizer.get_vocab()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    words = [vocab["a</w>"], vocab["red</w>"], vocab["circle</w>"]]
    assert ids.dtype == torch.int64 and ids.shape == (1, 16)
    assert ids[0].tolist() == [bos, *words, eos] + [eos] * 11  # CLIP pads with <|endoftext|>
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (bos, eos, eos)
    assert eos == len(tokenizer) - 1  # CLIP's layout: the special tokens last, <|endoftext|> the largest id
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == "a red circle"


def test_vocabulary_is_clip_layout_with_every_byte_with_and_without_end_of_word(tokenizer):
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = tokenizer.get_vocab()
    alphabet = sorted(ByteLevel.alphabet())
    assert [vocab[c] for c in alphabet] == list(range(256))
    assert [vocab[c + "</w>"] for c in alphabet] == list(range(256, 512))
    for symbol in "abcdefghijklmnopqrstuvwxyz0123456789.,!?;:'-\"()":
        assert symbol in vocab and symbol + "</w>" in vocab
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert len(vocab) == 512 + len({a + b for a, b in merges}) + 2


def test_unseen_words_tokenize_to_known_pieces_never_unknown(tokenizer):
    assert word_tokens(tokenizer, "zebra") == ["z", "e", "b", "r", "a</w>"]  # no caption pair occurs in it
    text = "Zebra ünïcödé x-ray 42 ☃"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    inner = ids[1:-1]
    assert tokenizer.eos_token_id not in inner and tokenizer.unk_token_id not in inner  # unk is <|endoftext|>
    assert all(0 <= i < 512 or i in tokenizer.get_vocab().values() for i in inner)
    pieces = "".join(tokenizer.convert_ids_to_tokens(inner)).replace("</w>", "")
    byte_level = "".join(w for w, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(
        tokenizer.backend_tokenizer.normalizer.normalize_str(text)))
    assert pieces == byte_level
    assert tokenizer.decode(tokenizer("zebra ünïcödé").input_ids, skip_special_tokens=True) == "zebra ünïcödé"


def test_save_pretrained_round_trip_through_every_loader(tokenizer, tmp_path):
    texts = CAPTIONS + ["zebra x-ray", "a red circle " * 6, ""]
    expected = tokenize_captions(tokenizer, texts)
    tokenizer.save_pretrained(tmp_path / "tok")
    for loader in (CLIPTokenizer, CLIPTokenizerFast, AutoTokenizer):
        loaded = loader.from_pretrained(tmp_path / "tok")
        assert loaded.model_max_length == 16 and len(loaded) == len(tokenizer)
        assert torch.equal(tokenize_captions(loaded, texts), expected), loader
    # the Stable Diffusion 1.x layout ships vocab.json + merges.txt (no tokenizer.json): it must load the same
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    tokenizer.backend_tokenizer.model.save(str(legacy))
    (legacy / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 16}))
    assert torch.equal(tokenize_captions(CLIPTokenizer.from_pretrained(legacy), texts), expected)


def random_words(seed, count=120):
    """Words over a four-letter alphabet: many shared pieces, so BPE meets many count ties."""
    rng = random.Random(seed)
    return ["".join(rng.choice("abcd") for _ in range(rng.randint(1, 9))) for _ in range(count)]


HARD_CAPTIONS = [  # shared prefixes, words inside words, rare words, repeats, unicode, long words, punctuation
    "re red redder reddish reddest r rr rrr",
    "aaaa aaa aaaaaaa abab abababab banana bandana a ab",
    "naïve café ünïcödé Ünïcödé 日本語 ☃ 🙂 straße",
    "pneumonoultramicroscopicsilicovolcanoconiosis " + "x" * 40 + " " + "xy" * 25,
    "x-ray 42 it's (two) words... end!",
    " ".join(random_words(0)),
]


@pytest.fixture(scope="module")
def hard_tokenizer():
    return build_clip_tokenizer(HARD_CAPTIONS)


def test_every_word_of_the_captions_is_one_token(hard_tokenizer):
    tokenizer = hard_tokenizer
    backend = tokenizer.backend_tokenizer
    for caption in HARD_CAPTIONS:
        words = [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(caption))]
        assert len(words) >= 3
        assert tokenizer.tokenize(caption) == [word + "</w>" for word in words], caption
    assert len(tokenizer.tokenize("ünïcödé")) == 1 and tokenizer.decode(tokenizer("Ünïcödé").input_ids[1:-1]) == (
        "ünïcödé")
    for unseen in ["redd", "rrrr", "bananas", "日本", "xyx"]:  # pieces of caption words, yet never a caption word
        ids = tokenizer(unseen, add_special_tokens=False).input_ids
        assert len(ids) > 1 and tokenizer.unk_token_id not in ids and tokenizer.decode(ids) == unseen, unseen


def test_hard_captions_reload_with_identical_ids(hard_tokenizer, tmp_path):
    """Unicode, long and punctuation merges survive tokenizer.json and the vocab.json + merges.txt layout."""
    expected = hard_tokenizer(HARD_CAPTIONS, verbose=False).input_ids
    hard_tokenizer.save_pretrained(tmp_path / "tok")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    hard_tokenizer.backend_tokenizer.model.save(str(legacy))
    for folder in (tmp_path / "tok", legacy):
        loaded = CLIPTokenizer.from_pretrained(folder)
        assert loaded.get_vocab() == hard_tokenizer.get_vocab(), folder
        assert loaded(HARD_CAPTIONS, verbose=False).input_ids == expected, folder


def test_same_caption_set_gives_the_same_tokenizer_in_any_order():
    first = build_clip_tokenizer(CAPTIONS)
    shuffled = build_clip_tokenizer(list(reversed(CAPTIONS)) + CAPTIONS[:2])
    assert first.backend_tokenizer.to_str() == shuffled.backend_tokenizer.to_str()
    other = build_clip_tokenizer(CAPTIONS + ["a yellow star"])
    assert other.get_vocab() != first.get_vocab() and word_tokens(other, "yellow") == ["yellow</w>"]
    # many count ties: their order must not depend on the order words reach the trainer, nor on the run
    words = random_words(1, count=200)
    expected = build_clip_tokenizer([" ".join(words)]).backend_tokenizer.to_str()
    rng = random.Random(2)
    for _ in range(3):
        captions = [" ".join(rng.sample(words, 20)) for _ in range(30)] + [" ".join(words)]
        rng.shuffle(captions)
        assert build_clip_tokenizer(captions).backend_tokenizer.to_str() == expected


def test_shapes_caption_ids_are_pinned():
    """The ids of the built-in shapes captions, pinned: a text-to-image run is bit-identical only with the same ids,
    and a tokenizers release that breaks BpeTrainer's count ties differently would change them silently."""
    from ddpm_hub.text_to_image import adherence_prompts

    tokenizer = build_clip_tokenizer(adherence_prompts(18))  # every colour x shape caption
    assert len(tokenizer) == 551
    assert tokenizer(["a red circle", "an orange triangle", "a purple square"]).input_ids == [
        [549, 320, 537, 541, 550], [549, 516, 544, 547, 550], [549, 320, 545, 546, 550]]


def test_bad_tokenizer_inputs_raise_one_line_input_errors(tokenizer):
    cases = [
        (lambda: build_clip_tokenizer("a red circle"), "captions must be a list of strings, got str"),
        (lambda: build_clip_tokenizer([]), "captions is empty"),
        (lambda: build_clip_tokenizer(["a", None]), "captions[1] is NoneType None"),
        (lambda: build_clip_tokenizer(["a"], model_max_length=2), "model_max_length 2 must be an integer >= 3"),
        (lambda: tokenize_captions(tokenizer, []), "captions is empty"),
        (lambda: tokenize_captions(tokenizer, ["ok", 3]), "captions[1] is int 3"),
    ]
    for call, message in cases:
        with pytest.raises(InputError) as caught:
            call()
        assert message in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------------------------------------ tokenization
def test_truncation_warns_once_with_the_count_and_the_limit(caplog):
    tokenizer = build_clip_tokenizer(["a red circle"], model_max_length=8)
    exactly_eight = "a red circle a red circle"  # 6 words + bos + eos = 8 tokens: fits, not cut
    nine, long = "a red circle a red circle a", "a red circle " * 5
    captions = ["a red circle", exactly_eight, nine, long, long]
    with caplog.at_level(logging.WARNING, logger="ddpm_hub.text_encoder"):
        ids = tokenize_captions(tokenizer, captions)
    records = [r for r in caplog.records if r.name == "ddpm_hub.text_encoder"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "3 of 5 captions" in records[0].getMessage() and "model_max_length of 8 tokens" in records[0].getMessage()
    eos = tokenizer.eos_token_id
    assert ids.shape == (5, 8)
    assert ids[1].tolist() == tokenizer(exactly_eight).input_ids
    for row, caption in zip(ids[2:], captions[2:]):
        full = tokenizer(caption, verbose=False).input_ids
        assert row[:7].tolist() == full[:7] and row[7].item() == eos  # cut to L, still ending in <|endoftext|>
    for batch, expected in [(captions[:2], []), (captions[1:3], ["1 of 2 captions"])]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ddpm_hub.text_encoder"):
            tokenize_captions(tokenizer, batch)
        records = [r.getMessage() for r in caplog.records if r.name == "ddpm_hub.text_encoder"]
        assert len(records) == len(expected) and all(e in r for e, r in zip(expected, records))


# ------------------------------------------------------------------------------------------------ text encoder
def test_config_matches_the_tokenizer(tokenizer):
    config = text_encoder_config(tokenizer, **SIZES)
    assert config.vocab_size == len(tokenizer) and config.max_position_embeddings == 16
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert config.eos_token_id != 2  # 2 selects transformers' legacy argmax-of-ids pooling
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        32, 2, 2, 64)
    for sizes, message in [({"hidden_size": 30, "num_attention_heads": 4}, "hidden_size 30 must be a multiple of "
                            "num_attention_heads 4"), ({"num_hidden_layers": 0}, "num_hidden_layers 0 must be a "
                                                       "positive integer")]:
        with pytest.raises(InputError, match=message):
            text_encoder_config(tokenizer, **sizes)


def test_encoder_output_shapes_and_pooled_state_at_the_first_eos(tokenizer, encoder):
    captions = ["a red circle", "two green triangles on a white background", "", "a red circle " * 8]
    ids = tokenize_captions(tokenizer, captions)
    with torch.no_grad():
        output = encoder(ids)
    assert output.last_hidden_state.shape == (4, 16, 32) and output.pooler_output.shape == (4, 32)
    # <|endoftext|> sits right after <|startoftext|> + the words; a truncated caption ends at position L - 1
    eos_position = [len(tokenizer(c, add_special_tokens=False).input_ids) + 1 for c in captions[:3]] + [15]
    assert eos_position[:3] == [4, 8, 1]
    expected = output.last_hidden_state[torch.arange(4), torch.tensor(eos_position)]
    assert torch.equal(output.pooler_output, expected)
    assert not torch.allclose(output.pooler_output, output.last_hidden_state[:, -1])  # not just the last position
    with torch.no_grad():
        assert torch.equal(encode_prompts(tokenizer, encoder, captions), output.last_hidden_state)
        assert torch.equal(encode_prompts(tokenizer, encoder, "a red circle"), output.last_hidden_state[:1])


def test_build_text_encoder_is_deterministic_for_a_seed_and_leaves_the_global_rng(tokenizer):
    state = torch.get_rng_state()
    first, again = (build_text_encoder(tokenizer, seed=3, **SIZES).state_dict() for _ in range(2))
    other = build_text_encoder(tokenizer, seed=4, **SIZES).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["embeddings.token_embedding.weight"], other["embeddings.token_embedding.weight"])
    model = build_text_encoder(tokenizer)  # defaults: hidden 64, 2 layers, 2 heads, MLP 128
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.intermediate_size) == (64, 2, 128)
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------------ pretrained
def save_layouts(tokenizer, encoder, root):
    """The same pair as a flat folder and as a Stable Diffusion folder."""
    tokenizer.save_pretrained(root / "flat")
    encoder.save_pretrained(root / "flat")
    tokenizer.save_pretrained(root / "sd" / "tokenizer")
    encoder.save_pretrained(root / "sd" / "text_encoder")
    (root / "sd" / "model_index.json").write_text("{}")
    return root / "flat", root / "sd"


def test_load_text_components_both_layouts_identical_and_frozen(tokenizer, encoder, tmp_path):
    prompts = CAPTIONS + ["zebra", ""]
    with torch.no_grad():
        expected = encode_prompts(tokenizer, encoder, prompts)
    for folder in save_layouts(tokenizer, encoder, tmp_path):
        loaded_tokenizer, loaded_encoder = load_text_components(str(folder))
        assert isinstance(loaded_tokenizer, CLIPTokenizer) and isinstance(loaded_encoder, CLIPTextModel)
        assert torch.equal(tokenize_captions(loaded_tokenizer, prompts), tokenize_captions(tokenizer, prompts))
        with torch.no_grad():
            assert torch.equal(encode_prompts(loaded_tokenizer, loaded_encoder, prompts), expected)
        assert not loaded_encoder.training and not any(p.requires_grad for p in loaded_encoder.parameters())
    assert all(p.requires_grad for p in encoder.parameters())  # the saved model itself is not frozen


def test_transformers_4_key_names_load_the_same_weights(tokenizer, encoder, tmp_path):
    """Stable Diffusion checkpoints saved by transformers 4 name the weights text_model.* and carry position_ids."""
    from safetensors.torch import load_file, save_file

    flat, _ = save_layouts(tokenizer, encoder, tmp_path)
    weights = {f"text_model.{k}": v for k, v in load_file(flat / "model.safetensors").items()}
    weights["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    save_file(weights, flat / "model.safetensors", metadata={"format": "pt"})
    loaded_tokenizer, loaded_encoder = load_text_components(flat)
    with torch.no_grad():
        assert torch.equal(encode_prompts(loaded_tokenizer, loaded_encoder, CAPTIONS),
                           encode_prompts(tokenizer, encoder, CAPTIONS))


def _partial_weights(folder):
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "final_layer_norm" not in k}, folder / "model.safetensors",
              metadata={"format": "pt"})


def _long_tokenizer(folder):
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))


DAMAGE = {  # name: (folder to pass, how to damage the saved layouts, the message's telling part)
    "missing": ("nowhere", None, "'{root}/nowhere' does not exist"),
    "file": ("flat/config.json", None, "is a file"),
    "no text_encoder/": ("sd", lambda r: _rmtree(r / "sd" / "text_encoder"),
                         "has a tokenizer/ subfolder but no text_encoder/ subfolder"),
    "no tokenizer/": ("sd", lambda r: _rmtree(r / "sd" / "tokenizer"),
                      "has a text_encoder/ subfolder but no tokenizer/ subfolder"),
    "flat, no tokenizer": ("flat", lambda r: [(r / "flat" / f).unlink() for f in ("tokenizer.json",)],
                           "has no tokenizer files (and no tokenizer/ and text_encoder/ subfolders): expected "
                           "tokenizer.json or vocab.json + merges.txt"),
    "no weights": ("sd", lambda r: (r / "sd" / "text_encoder" / "model.safetensors").unlink(),
                   "subfolder text_encoder/ has no weights file (model.safetensors)"),
    "no config": ("sd", lambda r: (r / "sd" / "text_encoder" / "config.json").unlink(),
                  "subfolder text_encoder/ has no config.json"),
    "bad config": ("sd", lambda r: (r / "sd" / "text_encoder" / "config.json").write_text("{oops"),
                   "the text encoder could not be read"),
    "bad weights": ("flat", lambda r: (r / "flat" / "model.safetensors").write_bytes(b"\x00" * 64),
                    "the text encoder could not be read"),
    "bad tokenizer": ("sd", lambda r: (r / "sd" / "tokenizer" / "tokenizer.json").write_text('{"model": 1}'),
                      "the tokenizer could not be read"),
    "partial weights": ("flat", lambda r: _partial_weights(r / "flat"),
                        "the text encoder's weights are not a CLIPTextModel's (2 missing, e.g. "
                        "final_layer_norm.bias)"),
    "no model_max_length": ("sd", lambda r: _vocab_and_merges_only(r / "sd" / "tokenizer"),
                            "the tokenizer has no model_max_length (its tokenizer_config.json sets none)"),
    "too long": ("sd", lambda r: _long_tokenizer(r / "sd" / "tokenizer"),
                 "the tokenizer's model_max_length 77 exceeds the text encoder's max_position_embeddings 16"),
}


def _vocab_and_merges_only(folder):
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    tokenizer.backend_tokenizer.model.save(str(folder))


def _rmtree(path):
    import shutil

    shutil.rmtree(path)


@pytest.mark.parametrize("case", list(DAMAGE))
def test_load_text_components_errors_name_the_problem(case, tokenizer, encoder, tmp_path):
    folder, damage, message = DAMAGE[case]
    save_layouts(tokenizer, encoder, tmp_path)
    if damage is not None:
        damage(tmp_path)
    with pytest.raises(InputError) as caught:
        load_text_components(tmp_path / folder)
    text = str(caught.value)
    assert text.startswith(f"{FLAG} '{tmp_path / folder}'") and "\n" not in text
    assert message.format(root=tmp_path) in text


def test_hub_id_offline_is_a_one_line_input_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network here
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(InputError) as caught:
        load_text_components("no-such-owner/no-such-text-encoder")
    text = str(caught.value)
    assert text.startswith(f"{FLAG} 'no-such-owner/no-such-text-encoder' is not a local folder and could not be "
                           "fetched from the Hugging Face Hub") and "\n" not in text


# ------------------------------------------------------------------------------------------------ diffusers
def tiny_stable_diffusion(tokenizer, encoder):
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    scheduler = DDPMScheduler(num_train_timesteps=10, steps_offset=1, clip_sample=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def test_stable_diffusion_encode_prompt_equals_encode_prompts_and_the_folder_loads_back(tokenizer, encoder, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = tiny_stable_diffusion(tokenizer, encoder)
    prompts = ["a red circle", "two green triangles", "a red circle " * 8]
    with torch.no_grad():
        conditional, unconditional = pipe.encode_prompt(prompts, "cpu", 1, True)
        assert torch.equal(conditional, encode_prompts(tokenizer, encoder, prompts))
        assert torch.equal(unconditional, encode_prompts(tokenizer, encoder, [""] * 3))  # CFG's empty prompt
    assert conditional.shape == (3, 16, 32)

    pipe.save_pretrained(tmp_path / "sd")
    stock = StableDiffusionPipeline.from_pretrained(tmp_path / "sd", safety_checker=None)
    assert type(stock.tokenizer) is CLIPTokenizer
    assert torch.equal(tokenize_captions(stock.tokenizer, prompts), tokenize_captions(tokenizer, prompts))
    loaded_tokenizer, loaded_encoder = load_text_components(tmp_path / "sd")
    with torch.no_grad():
        assert torch.equal(stock.encode_prompt(prompts, "cpu", 1, False)[0], conditional)
        assert torch.equal(encode_prompts(loaded_tokenizer, loaded_encoder, prompts), conditional)
        images = stock(prompts[:1], height=16, width=16, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 16, 16, 3)
