"""Write the Hugging Face files A1111 reads for CLIP ViT-L/14 and SD3's T5 tokenizer, so the host never contacts the hub.

    python hf_offline.py HF_HOME

A1111 1.10.1 builds the SD1.5 / SDXL CLIP-L text encoder from the config of
`openai/clip-vit-large-patch14` (weights come from the checkpoint) and its tokenizer from the same repo
id. We write a hub cache entry for that id: the tokenizer files are derived from the BPE table that
open_clip bundles (the same table OpenAI's and HF's CLIP tokenizers were made from), and config.json
states the ViT-L/14 architecture. Run the host with HF_HOME=<HF_HOME> HF_HUB_OFFLINE=1.

SD3 (modules/models/sd3/sd3_cond.py) builds a `T5TokenizerFast` for `google/t5-v1_1-xxl` whenever an SD3 model
loads, even with T5 off (the option sd3_enable_t5, off by default), when its T5 rows are zeros and the tokenizer is
never used. That repo gets a stand-in: a tokenizer.json with T5's special tokens and a small byte-level Unigram
vocabulary, made with the `tokenizers` package; it loads and tokenizes, but it is not T5's vocabulary, so the
harness runs SD3 with T5 off.
"""
import gzip
import json
import os
import sys

import open_clip.tokenizer as oct

REPO = "openai/clip-vit-large-patch14"
T5_REPO = "google/t5-v1_1-xxl"
REVISION = "0" * 40  # a made-up snapshot name; refs/main points to it


def tokenizer_files():
    lines = gzip.open(oct.default_bpe(), "rt", encoding="utf-8").read().split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]  # the slice open_clip's SimpleTokenizer uses
    byte_chars = list(oct.bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    return {
        "vocab.json": json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "special_tokens_map.json": json.dumps(special),
        "tokenizer_config.json": json.dumps(dict(special, model_max_length=77, do_lower_case=True,
                                                 errors="replace", add_prefix_space=False,
                                                 tokenizer_class="CLIPTokenizer")),
    }


def config():
    text = dict(model_type="clip_text_model", vocab_size=49408, hidden_size=768, intermediate_size=3072,
                num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                hidden_act="quick_gelu", projection_dim=768, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    vision = dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                  num_hidden_layers=24, num_attention_heads=16, image_size=224, patch_size=14,
                  hidden_act="quick_gelu", projection_dim=768)
    return json.dumps(dict(architectures=["CLIPModel"], model_type="clip", projection_dim=768,
                           logit_scale_init_value=2.6592, text_config=text, vision_config=vision), indent=1)


def t5_stand_in_files():
    """A T5TokenizerFast that loads offline: T5's pad / eos / unk ids (0, 1, 2), then one piece per printable ASCII
    character, with and without the word-start mark."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(chr(c), -5.0) for c in range(33, 127)] + [("\u2581" + chr(c), -4.0) for c in range(33, 127)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    # T5 ends every sequence with </s>; A1111's SDTokenizer reads its end token from the encoding of ''
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    return {
        "tokenizer.json": tokenizer.to_str(),
        "special_tokens_map.json": json.dumps(special),
        "tokenizer_config.json": json.dumps(dict(special, extra_ids=0, additional_special_tokens=[],
                                                 model_max_length=512, tokenizer_class="T5Tokenizer")),
    }


def write_repo(hf_home, repo, files):
    repo_dir = os.path.join(hf_home, "hub", "models--" + repo.replace("/", "--"))
    snap = os.path.join(repo_dir, "snapshots", REVISION)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(repo_dir, "refs"), exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(snap, name), "w", encoding="utf-8") as f:
            f.write(text)
    with open(os.path.join(repo_dir, "refs", "main"), "w") as f:
        f.write(REVISION)
    print(f"wrote {len(files)} files for {repo} under {snap}")


def main(hf_home):
    write_repo(hf_home, REPO, dict(tokenizer_files(), **{"config.json": config()}))
    write_repo(hf_home, T5_REPO, t5_stand_in_files())


if __name__ == "__main__":
    main(sys.argv[1])
