#!/usr/bin/env python3
"""Reference results from PyTorch and transformers, to check Shears against.

Part 1 (fixtures): writes three small LLaMA-layout checkpoints (fp32 with distinct magnitudes, bf16 with
many ties, fp32 with zeros of both signs, subnormals and infinities) and the masks that
torch.nn.utils.prune gives for them: global_unstructured (L1), l1_unstructured per tensor and
ln_structured over rows and columns. tests/Shears.Cluster.Tests/TorchReferenceTests.cs runs Shears on
the same checkpoints and compares.

Part 2 (LLaMA): for a trained Hugging Face LLaMA checkpoint and the outputs Shears wrote for it,
  - perplexity of each model computed by transformers' LlamaForCausalLM, against the figure in
    Shears' report;
  - magnitude masks from l1_unstructured, against the zeros of Shears' output;
  - Wanda and SparseGPT written here from the papers' descriptions (block by block: the inputs of a
    block's linear layers are captured with the block unpruned, all of them are pruned, and the pruned
    block computes the next block's inputs), with the exact counts Shears documents, against Shears'
    masks and weights, and the perplexity each reaches.

Part 3 (tokenizers): trains small tokenizers on TRAIN.txt with Hugging Face `tokenizers` (byte-level BPE in
the GPT-2, LLaMA-3, Qwen2 and NFKC styles) and `sentencepiece` (BPE with byte fallback, LLaMA-2 style), and
writes the ids each gives for TEST.txt; tests/Shears.Pruning.Tests/Models/TokenizerReference/ keeps them and
CheckpointTokenizerReferenceTests requires the same ids from Shears.

Part 4 (fine-tuning): recovery fine-tuning after magnitude pruning, done in PyTorch as Shears documents it (the
pruned linear weights of the blocks trained by AdamW without weight decay, masks re-applied after each step, batches
taken from the data in order, the mean next-token loss), against the weights, mean loss and perplexity of Shears'
output.

usage: torch_reference.py fixtures OUT_DIR
       torch_reference.py tokenizers TRAIN.txt TEST.txt OUT_DIR
       torch_reference.py finetune DIR STEPS BATCH LR OUT_JSON   (DIR holds dense/, magnitude-unstructured/ (masks),
                                                                  magnitude-ft/, finetune.json, eval.json)
       torch_reference.py llama DIR OUT_JSON   (DIR holds dense/, eval.json, calibration.json and
                                                Shears' outputs named METHOD-unstructured, METHOD-2of4)
       torch_reference.py families EVAL.json DIR...   (transformers' perplexity of each checkpoint: bench/families.sh)
"""
import json
import math
import os
import sys
import time

import torch
from torch import nn
from torch.nn.utils import prune
from safetensors.torch import save_file, load_file

HIDDEN, LAYERS, HEADS, KV_HEADS, INTER, VOCAB = 32, 3, 4, 2, 48, 40
PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def prunable(name):
    return name.startswith("model.layers.") and name.endswith("_proj.weight")


# ---------------------------------------------------------------- part 1: fixtures

def shapes():
    head_dim = HIDDEN // HEADS
    out = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,), "lm_head.weight": (VOCAB, HIDDEN)}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        out[p + "self_attn.q_proj.weight"] = (HIDDEN, HIDDEN)
        out[p + "self_attn.k_proj.weight"] = (KV_HEADS * head_dim, HIDDEN)
        out[p + "self_attn.v_proj.weight"] = (KV_HEADS * head_dim, HIDDEN)
        out[p + "self_attn.o_proj.weight"] = (HIDDEN, HIDDEN)
        out[p + "mlp.gate_proj.weight"] = (INTER, HIDDEN)
        out[p + "mlp.up_proj.weight"] = (INTER, HIDDEN)
        out[p + "mlp.down_proj.weight"] = (HIDDEN, INTER)
        out[p + "input_layernorm.weight"] = (HIDDEN,)
        out[p + "post_attention_layernorm.weight"] = (HIDDEN,)
    return out


EXTREME = torch.tensor([1e-45, -1e-45, 1e-40, 1.1754944e-38, 0.0, -0.0, 3.4e38, math.inf, -math.inf, 0.25, -0.25])


def make_checkpoint(kind, generator):
    tensors = {}
    for name, shape in shapes().items():
        if kind == "extreme" and prunable(name):
            # Mostly special values, a quarter of them distinct normal numbers.
            pick = EXTREME[torch.randint(len(EXTREME), shape, generator=generator)]
            normal = torch.randn(shape, generator=generator)
            t = torch.where(torch.rand(shape, generator=generator) < 0.25, normal, pick)
        else:
            t = torch.randn(shape, generator=generator) * 0.02
        tensors[name] = t.to(torch.bfloat16 if kind == "bf16" else torch.float32).contiguous()
    return tensors


def write_checkpoint(directory, tensors):
    os.makedirs(directory, exist_ok=True)
    names = sorted(tensors)
    first = [n for n in names if not n.startswith("model.layers.2.")]
    shards = {"model-00001-of-00002.safetensors": first,
              "model-00002-of-00002.safetensors": [n for n in names if n not in first]}
    weight_map = {}
    for file, members in shards.items():
        save_file({n: tensors[n] for n in members}, os.path.join(directory, file), metadata={"format": "pt"})
        weight_map.update({n: file for n in members})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1, sort_keys=True)
    dtype = "bfloat16" if next(iter(tensors.values())).dtype == torch.bfloat16 else "float32"
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
                   "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "num_hidden_layers": LAYERS,
                   "intermediate_size": INTER, "vocab_size": VOCAB, "torch_dtype": dtype}, f, indent=1)


def holders(tensors):
    """One module per prunable tensor, in ordinal name order, holding a copy as its 'weight'."""
    out = []
    for name in sorted(n for n in tensors if prunable(n)):
        m = nn.Module()
        m.weight = nn.Parameter(tensors[name].clone(), requires_grad=False)
        out.append((name, m))
    return out


def masks_of(mods):
    # prune keeps weight_mask with 1 = kept; the fixture stores 1 = masked.
    return {name: (m.weight_mask == 0).to(torch.uint8).contiguous() for name, m in mods}


def fixture_cases(tensors, cases):
    result = {}
    for case in cases:
        kind, *rest = case.split("-")
        mods = holders(tensors)
        if kind == "global":
            prune.global_unstructured([(m, "weight") for _, m in mods], pruning_method=prune.L1Unstructured, amount=float(rest[0]))
        elif kind == "layer":
            for _, m in mods:
                prune.l1_unstructured(m, "weight", amount=float(rest[0]))
        elif kind in ("rows", "columns"):
            norm = math.inf if rest[0] == "inf" else int(rest[0])
            for _, m in mods:
                prune.ln_structured(m, "weight", amount=float(rest[1]), n=norm, dim=0 if kind == "rows" else 1)
        else:
            raise ValueError(case)
        for name, mask in masks_of(mods).items():
            result[f"{case}/{name}"] = mask
    return result


def fixtures(out_dir):
    generator = torch.Generator().manual_seed(20261128)
    plan = {
        "f32-normal": ["global-0.37", "global-0.8", "layer-0.37", "rows-1-0.37", "rows-2-0.5", "rows-inf-0.25", "columns-1-0.37", "columns-2-0.6"],
        # (No structured case in bf16: ln_structured rounds each row's norm to bf16, which ties rows that differ.)
        "bf16-normal": ["global-0.5", "layer-0.5"],
        "f32-extreme": ["global-0.5", "layer-0.3"],
    }
    summary = {"torch": torch.__version__, "cases": {}}
    for ckpt, cases in plan.items():
        tensors = make_checkpoint(ckpt.split("-")[1] if ckpt.startswith("f32") else "bf16", generator)
        directory = os.path.join(out_dir, ckpt)
        write_checkpoint(os.path.join(directory, "model"), tensors)
        masks = fixture_cases(tensors, cases)
        save_file(masks, os.path.join(directory, "torch-masks.safetensors"),
                  metadata={"producer": f"torch.nn.utils.prune, torch {torch.__version__}", "meaning": "1 = masked"})
        scores = torch.cat([tensors[n].float().abs().flatten() for n in sorted(tensors) if prunable(n)])
        summary["cases"][ckpt] = {"cases": cases, "prunable": scores.numel(), "distinct_scores": torch.unique(scores).numel(),
                                  "masked": {c: int(sum(v.sum().item() for k, v in masks.items() if k.startswith(c + "/"))) for c in cases}}
    with open(os.path.join(out_dir, "fixtures.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


# ---------------------------------------------------------------- part 2: LLaMA

def load_model(directory):
    from transformers import LlamaForCausalLM
    try:
        model = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        model = LlamaForCausalLM.from_pretrained(directory, torch_dtype=torch.float32, attn_implementation="eager")
    model.config.use_cache = False
    return model.eval()


@torch.no_grad()
def perplexity(model, sequences, batch=32):
    total, count = 0.0, 0
    for start in range(0, len(sequences), batch):
        ids = torch.tensor(sequences[start:start + batch])
        logits = model(input_ids=ids, use_cache=False).logits.double()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        total += nll.item()
        count += ids[:, 1:].numel()
    return math.exp(total / count), count


def families(eval_json, directories):
    """Each checkpoint's perplexity on EVAL.json as transformers computes it (AutoModelForCausalLM, eager attention,
    float32): the figures bench/families.sh prints for Shears on the same files."""
    from transformers import AutoModelForCausalLM
    sequences = json.load(open(eval_json))
    for directory in directories:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager").eval()
        value, count = perplexity(model, sequences)
        print(f"{directory}\t{model.config.model_type}\t{value:.7f}\t{count} predicted tokens")


class Stop(Exception):
    pass


@torch.no_grad()
def first_block_inputs(model, ids):
    captured = {}

    def hook(module, args, kwargs):
        captured["args"], captured["kwargs"] = args, dict(kwargs)
        raise Stop

    handle = model.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=ids, use_cache=False)
    except Stop:
        pass
    finally:
        handle.remove()
    kwargs = captured["kwargs"]
    hidden = captured["args"][0] if captured["args"] else kwargs.pop("hidden_states")
    kwargs.pop("hidden_states", None)
    return hidden, kwargs


def run_block(block, hidden, kwargs):
    out = block(hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def wanda_mask(weight, sumsq, sparsity, nm):
    metric = weight.double().abs() * sumsq.sqrt().unsqueeze(0)
    rows, cols = metric.shape
    mask = torch.zeros_like(metric, dtype=torch.bool)
    if nm is None:
        k = round(sparsity * cols)  # Python's round is half to even
        order = torch.sort(metric, dim=1, stable=True).indices[:, :k]
        mask.scatter_(1, order, True)
    else:
        n, m = nm
        groups = metric.reshape(rows, cols // m, m)
        order = torch.sort(groups, dim=2, stable=True).indices[:, :, :n]
        mask.view(rows, cols // m, m).scatter_(2, order, True)
    return mask


def sparsegpt(weight, gram, count, sparsity, nm, block_size=128, dampening=0.01):
    w = weight.clone().float()
    rows, cols = w.shape
    h = 2.0 * gram / count
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += dampening * torch.diag(h).mean() * torch.eye(cols, dtype=h.dtype)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    u = torch.linalg.cholesky(hinv, upper=True).float()
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    masked = 0
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        w1 = w[:, i1:i2].clone()
        u1 = u[i1:i2, i1:i2]
        d = torch.diag(u1)
        m1 = torch.zeros_like(w1, dtype=torch.bool)
        if nm is None:
            # Exact prefix counts: the block ending at column i2 brings columns [0, i2) to round(s * rows * i2).
            k = round(sparsity * rows * i2) - masked
            saliency = (w1 ** 2 / d.unsqueeze(0) ** 2).flatten()
            order = torch.sort(saliency, stable=True).indices[:k]
            m1.view(-1)[order] = True
            masked += k
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                group = w1[:, i:i + nm[1]] ** 2 / d[i:i + nm[1]].unsqueeze(0) ** 2
                order = torch.sort(group, dim=1, stable=True).indices[:, :nm[0]]
                m1[:, i:i + nm[1]].scatter_(1, order, True)
            col = w1[:, i]
            q = torch.where(m1[:, i], torch.zeros_like(col), col)
            err = (col - q) / u1[i, i]
            w1[:, i:] -= err.unsqueeze(1) * u1[i, i:].unsqueeze(0)
            w1[:, i] = q
            err1[:, i] = err
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
        mask[:, i1:i2] = m1
    return w, mask


@torch.no_grad()
def calibrated(model, calibration, method, nm, sparsity=0.5):
    """Prunes model in place, block by block, as the papers do; returns the masks by tensor name."""
    ids = torch.tensor(calibration)
    hidden, kwargs = first_block_inputs(model, ids)
    masks = {}
    for index, block in enumerate(model.model.layers):
        stats = {}
        handles = []
        for proj in PROJ:
            linear = block.get_submodule(proj)

            def hook(module, args, proj=proj):
                x = args[0].reshape(-1, args[0].shape[-1]).double()
                s = stats.setdefault(proj, {"sumsq": 0.0, "gram": 0.0, "n": 0})
                s["sumsq"] = s["sumsq"] + (x * x).sum(0)
                if method == "sparsegpt":
                    s["gram"] = s["gram"] + x.T @ x
                s["n"] += x.shape[0]

            handles.append(linear.register_forward_pre_hook(hook))
        run_block(block, hidden, kwargs)
        for h in handles:
            h.remove()
        for proj in PROJ:
            linear = block.get_submodule(proj)
            s = stats[proj]
            if method == "wanda":
                mask = wanda_mask(linear.weight, s["sumsq"], sparsity, nm)
                linear.weight[mask] = 0.0
            else:
                new, mask = sparsegpt(linear.weight, s["gram"], s["n"], sparsity, nm)
                linear.weight.copy_(new)
            masks[f"model.layers.{index}.{proj}.weight"] = mask
        hidden = run_block(block, hidden, kwargs)
    return masks


def compare(reference_masks, shears_dir, model=None):
    shears = {}
    for file in sorted(os.listdir(shears_dir)):
        if file.endswith(".safetensors"):
            shears.update(load_file(os.path.join(shears_dir, file)))
    differ, total, worst = 0, 0, 0.0
    for name, mask in reference_masks.items():
        theirs = shears[name] == 0
        differ += int((theirs != mask).sum())
        total += mask.numel()
        if model is not None:
            ours = model.get_parameter(name).detach()
            scale = ours.abs().max().item()
            worst = max(worst, ((ours - shears[name].float()).abs().max().item()) / scale)
    return {"mask_elements_differing": differ, "elements": total, "worst_weight_difference_relative_to_max": worst}


def llama(directory, out_json):
    torch.set_num_threads(min(16, os.cpu_count() or 1))
    with open(os.path.join(directory, "eval.json")) as f:
        evaluation = json.load(f)
    with open(os.path.join(directory, "calibration.json")) as f:
        calibration = json.load(f)[:128]
    result = {"torch": torch.__version__}
    import transformers
    result["transformers"] = transformers.__version__

    def report(name):
        with open(os.path.join(directory, name, "shears-report.json")) as f:
            return json.load(f)

    started = time.time()
    dense = load_model(os.path.join(directory, "dense"))
    ppl, tokens = perplexity(dense, evaluation)
    any_report = report("magnitude-unstructured")
    result["dense"] = {"transformers": ppl, "shears": any_report["baseline"]["eval"]["value"], "tokens": tokens,
                       "shears_tokens": any_report["baseline"]["eval"]["tokens"]}
    print("dense", result["dense"], flush=True)

    for run in ["magnitude-unstructured", "wanda-unstructured", "sparsegpt-unstructured", "wanda-2of4", "sparsegpt-2of4"]:
        if not os.path.isdir(os.path.join(directory, run)):
            continue
        method, pattern = run.split("-")
        nm = (2, 4) if pattern == "2of4" else None
        entry = {"shears_reported": report(run)["rounds"][-1]["eval"]["value"]}
        entry["shears_output_by_transformers"] = perplexity(load_model(os.path.join(directory, run)), evaluation)[0]
        model = load_model(os.path.join(directory, "dense"))
        if method == "magnitude":
            masks = {}
            for index, block in enumerate(model.model.layers):
                for proj in PROJ:
                    linear = block.get_submodule(proj)
                    prune.l1_unstructured(linear, "weight", amount=0.5)
                    masks[f"model.layers.{index}.{proj}.weight"] = linear.weight_mask == 0
                    prune.remove(linear, "weight")
        else:
            masks = calibrated(model, calibration, method, nm)
        entry.update(compare(masks, os.path.join(directory, run), model if method == "sparsegpt" else None))
        entry["reference_perplexity"] = perplexity(model, evaluation)[0]
        result[run] = entry
        print(run, entry, flush=True)
    result["seconds"] = time.time() - started
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------- part 4: fine-tuning

def finetune(directory, steps, batch, lr, out_json):
    torch.set_num_threads(min(16, os.cpu_count() or 1))
    with open(os.path.join(directory, "finetune.json")) as f:
        data = json.load(f)
    with open(os.path.join(directory, "eval.json")) as f:
        evaluation = json.load(f)
    pruned = {}
    for file in sorted(os.listdir(os.path.join(directory, "magnitude-unstructured"))):
        if file.endswith(".safetensors"):
            pruned.update(load_file(os.path.join(directory, "magnitude-unstructured", file)))
    model = load_model(os.path.join(directory, "dense"))
    for p in model.parameters():
        p.requires_grad_(False)
    masks, trained = {}, []
    for index, block in enumerate(model.model.layers):
        for proj in PROJ:
            name = f"model.layers.{index}.{proj}.weight"
            weight = block.get_submodule(proj).weight
            masks[name] = pruned[name] == 0
            with torch.no_grad():
                weight[masks[name]] = 0.0
            weight.requires_grad_(True)
            trained.append((name, weight))
    start = {name: w.detach().clone() for name, w in trained}
    optimizer = torch.optim.AdamW([w for _, w in trained], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    losses = []
    for step in range(steps):
        rows = [(step * batch + i) % len(data) for i in range(batch)]
        ids = torch.tensor([data[r] for r in rows])
        logits = model(input_ids=ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for name, w in trained:
                w[masks[name]] = 0.0
        losses.append(loss.item())
    shears = {}
    for file in sorted(os.listdir(os.path.join(directory, "magnitude-ft"))):
        if file.endswith(".safetensors"):
            shears.update(load_file(os.path.join(directory, "magnitude-ft", file)))
    worst_difference, worst_movement, masked_nonzero = 0.0, 0.0, 0
    for name, w in trained:
        ours = w.detach()
        worst_difference = max(worst_difference, (ours - shears[name].float()).abs().max().item())
        worst_movement = max(worst_movement, (ours - start[name]).abs().max().item())
        masked_nonzero += int((shears[name][masks[name]] != 0).sum())
    with open(os.path.join(directory, "magnitude-ft", "shears-report.json")) as f:
        report = json.load(f)
    model.eval()
    result = {"torch": torch.__version__, "steps": steps, "batch": batch, "lr": lr,
              "mean_loss_torch": sum(losses) / len(losses), "mean_loss_shears": report["rounds"][-1]["finetuneLoss"],
              "perplexity_torch": perplexity(model, evaluation)[0], "perplexity_shears": report["rounds"][-1]["eval"]["value"],
              "worst_weight_difference": worst_difference, "worst_weight_movement": worst_movement,
              "masked_weights_not_zero_in_shears_output": masked_nonzero}
    print(json.dumps(result, indent=1))
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------- part 3: tokenizers

# The pre-tokenizer regexes of LLaMA-3 and Qwen2 as their tokenizer.json files publish them.
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def byte_level(style, lines, directory):
    from tokenizers import Tokenizer, Regex, AddedToken, models, trainers, pre_tokenizers, decoders, normalizers, processors
    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))
    if style in ("gpt2", "nfkc"):
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT if style == "llama3" else QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if style in ("llama3", "qwen2"):
        tok.normalizer = normalizers.NFC()
    elif style == "nfkc":
        tok.normalizer = normalizers.NFKC()
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer)
    tok.add_tokens([AddedToken("<|pad|>", special=False, normalized=False)])
    bos = tok.token_to_id("<|begin_of_text|>")
    if style == "llama3":
        tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False),
                                                  processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])])
    elif style == "nfkc":
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A <|end_of_text|>",
                                                           special_tokens=[("<|begin_of_text|>", bos), ("<|end_of_text|>", tok.token_to_id("<|end_of_text|>"))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    return lambda text: tok.encode(text).ids


def sentence_piece(lines, directory):
    import io
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=1000, model_type="bpe",
                                   byte_fallback=True, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
                                   normalization_rule_name="identity", allow_whitespace_only_pieces=True, character_coverage=0.9995,
                                   unk_id=0, bos_id=1, eos_id=2, minloglevel=2)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False}, f)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    return lambda text: [sp.bos_id()] + sp.encode(text)


def tokenizer_fixtures(train_path, test_path, out_dir):
    import tokenizers
    import sentencepiece
    with open(train_path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    with open(test_path, encoding="utf-8", newline="") as f:
        text = f.read()
    summary = {"versions": {"tokenizers": tokenizers.__version__, "sentencepiece": sentencepiece.__version__}, "test_chars": len(text), "ids": {}}
    for style in ["gpt2", "llama3", "qwen2", "nfkc", "sentencepiece"]:
        directory = os.path.join(out_dir, style)
        encode = sentence_piece(lines, directory) if style == "sentencepiece" else byte_level(style, lines, directory)
        ids = encode(text)
        with open(os.path.join(directory, "ids.json"), "w") as f:
            json.dump(ids, f)
        summary["ids"][style] = len(ids)
    with open(os.path.join(out_dir, "tokenizers.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "fixtures":
        fixtures(sys.argv[2])
    elif len(sys.argv) >= 5 and sys.argv[1] == "tokenizers":
        tokenizer_fixtures(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) >= 7 and sys.argv[1] == "finetune":
        finetune(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
    elif len(sys.argv) >= 4 and sys.argv[1] == "families":
        families(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "llama":
        llama(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
