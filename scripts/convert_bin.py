#!/usr/bin/env python3
"""Convert PyTorch `.bin` checkpoints to safetensors without running any pickled code.

    python3 scripts/convert_bin.py IN OUT

IN is a model or adapter directory (`pytorch_model.bin`, the shards of
`pytorch_model.bin.index.json`, or `adapter_model.bin`) or a single `.bin` file; OUT is a new
directory (or, for a single file, a `.safetensors` path). Shards keep their numbering
(`pytorch_model-00001-of-00002.bin` -> `model-00001-of-00002.safetensors`, with
`model.safetensors.index.json`), every other file of the directory (config.json, tokenizer files,
...) is copied, and each tensor keeps its name, dtype, shape and values bit for bit. Works for the
original LLaVA-Med layout, llava-hf, a CLIP tower directory and PEFT adapters alike: keys are not
touched.

Safety: a `.bin` is a zip holding a pickle, and unpickling can call any Python function. This
script never imports torch and never lets the pickle name anything outside an allow-list: the
tensor and parameter rebuild functions, the typed storage classes and OrderedDict, the same set
`torch.load(weights_only=True)` allows for a state dict. Anything else (`os.system`, `eval`,
`builtins.exec`, ...) stops the conversion with the name of what was asked for, before any of it
runs. Legacy (pre-1.6, non-zip) pickles are refused.

Standard library only (Python 3.8+). Tested by crates/runner/tests/cli_checkpoints.rs on fixtures
made by scripts/tests/make_bin_fixtures.py.
"""

import collections
import json
import pathlib
import pickle
import shutil
import struct
import sys
import zipfile

# torch storage class -> (safetensors dtype, bytes per element)
STORAGES = {
    "FloatStorage": ("F32", 4),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "DoubleStorage": ("F64", 8),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}


class Refused(Exception):
    pass


class Storage:
    def __init__(self, name):
        self.dtype, self.width = STORAGES[name]


class Tensor:
    """A view into a storage: what `_rebuild_tensor_v2` describes."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def contiguous_bytes(self, data):
        kind, width = self.storage
        numel = 1
        for s in self.size:
            numel *= s
        expected, acc = [], 1
        for s in reversed(self.size):
            expected.insert(0, acc)
            acc *= s
        if numel == 0:
            return b""
        if all(st == e or sz == 1 for st, e, sz in zip(self.stride, expected, self.size)):
            start = self.offset * width
            return data[start: start + numel * width]
        out = bytearray()

        def walk(dim, base):
            if dim == len(self.size):
                out.extend(data[base * width: (base + 1) * width])
                return
            for i in range(self.size[dim]):
                walk(dim + 1, base + i * self.stride[dim])

        walk(0, self.offset)
        return bytes(out)


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return Tensor(storage, offset, size, stride)


def rebuild_parameter(data, requires_grad=False, hooks=None):
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
}


class StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in STORAGES:
            return Storage(name)
        raise Refused(f"the pickle asks for {module}.{name}, which a state dict never needs; refusing to load it")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], Storage)):
            raise Refused(f"unexpected persistent id {pid!r}")
        return (pid[1].dtype, pid[1].width, str(pid[2]))


def read_bin(path):
    """{name: (dtype, shape, bytes)} of a torch zip checkpoint."""
    if not zipfile.is_zipfile(path):
        raise Refused(f"{path}: not a zip (a legacy pre-1.6 PyTorch pickle); re-save it with a current torch")
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise Refused(f"{path}: expected one data.pkl in the archive, found {pkl}")
        prefix = pkl[0][: -len("data.pkl")]
        with z.open(pkl[0]) as f:
            obj = StateDictUnpickler(f, z, prefix).load()
        if not isinstance(obj, dict):
            raise Refused(f"{path}: the pickle holds a {type(obj).__name__}, not a state dict")
        storages = {}
        out = {}
        for name, t in obj.items():
            if not isinstance(t, Tensor):
                raise Refused(f"{path}: {name!r} is a {type(t).__name__}, not a tensor")
            dtype, width, key = t.storage
            if key not in storages:
                storages[key] = z.read(f"{prefix}data/{key}")
            t.storage = (dtype, width)
            out[name] = (dtype, list(t.size), t.contiguous_bytes(storages[key]))
        return out


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(tensors):
            f.write(tensors[name][2])


def safetensors_name(bin_name):
    if bin_name == "adapter_model.bin":
        return "adapter_model.safetensors"
    if bin_name.startswith("pytorch_model"):
        return "model" + bin_name[len("pytorch_model"): -len(".bin")] + ".safetensors"
    return bin_name[: -len(".bin")] + ".safetensors"


def convert_dir(src, dst):
    index = src / "pytorch_model.bin.index.json"
    if index.is_file():
        meta = json.loads(index.read_text())
        shards = sorted(set(meta["weight_map"].values()))
    else:
        shards = sorted(p.name for p in src.glob("*.bin"))
        if not shards:
            raise Refused(f"{src}: no .bin checkpoint (pytorch_model.bin, its index, or adapter_model.bin)")
    dst.mkdir(parents=True)
    weight_map, total = {}, 0
    for shard in shards:
        tensors = read_bin(src / shard)
        out_name = safetensors_name(shard)
        write_safetensors(dst / out_name, tensors)
        for name, (_, _, data) in tensors.items():
            weight_map[name] = out_name
            total += len(data)
        print(f"{shard} -> {out_name}: {len(tensors)} tensors")
    if index.is_file():
        missing = sorted(set(meta["weight_map"]) - set(weight_map))
        if missing:
            raise Refused(f"{index}: {len(missing)} tensor(s) of the weight_map are in no shard, first {missing[0]}")
        (dst / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")
    for p in src.iterdir():
        if p.is_file() and not p.name.endswith(".bin") and p.name != "pytorch_model.bin.index.json":
            shutil.copy2(p, dst / p.name)


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__.split("\n\n")[1])
    src, dst = pathlib.Path(argv[0]), pathlib.Path(argv[1])
    if dst.exists():
        sys.exit(f"error: {dst} already exists")
    try:
        if src.is_file():
            write_safetensors(dst, read_bin(src))
        else:
            convert_dir(src, dst)
    except (Refused, pickle.UnpicklingError, KeyError, zipfile.BadZipFile) as e:
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        sys.exit(f"error: {e}")
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(sys.argv[1:])
