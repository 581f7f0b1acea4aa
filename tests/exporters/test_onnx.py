import onnx

from hwnas.exporters.onnx import OPSET, export_arch, export_layer


def test_layer_export_is_checked_close_to_pytorch_and_cached(tiny_space, tmp_path):
    spec = tiny_space.layers(tiny_space.default_arch())[3]
    first = export_layer(spec, tmp_path)
    assert not first.cached and first.max_abs_diff < 1e-4
    model = onnx.load(str(first.path))
    assert model.opset_import[0].version >= 17 and OPSET >= 17
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}  # folded into the convs
    mtime = first.path.stat().st_mtime_ns
    again = export_layer(spec, tmp_path)
    assert again.cached and again.path == first.path and again.path.stat().st_mtime_ns == mtime


def test_subnet_export_matches_pytorch(tiny_space, tmp_path):
    arch = tiny_space.random_archs(1, seed=5)[0]
    exported = export_arch(tiny_space, arch, batch=2, cache_dir=tmp_path)
    assert exported.input_shape == (2, 3, 32, 32) and exported.max_abs_diff < 1e-4
    model = onnx.load(str(exported.path))
    out = model.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in out] == [2, 10]
    other = export_arch(tiny_space, tiny_space.random_archs(1, seed=6)[0], cache_dir=tmp_path)
    assert other.path != exported.path


def test_composed_subnet_equals_pytorch_end_to_end(tiny_space, tmp_path):
    import numpy as np
    import onnxruntime as ort
    import torch

    from hwnas.exporters.onnx import seeded_layer

    arch = tiny_space.random_archs(1, seed=11)[0]
    specs = tiny_space.layers(arch, batch=2)
    path = export_arch(tiny_space, arch, batch=2, cache_dir=tmp_path).path
    x = torch.randn(*specs[0].input_shape)
    with torch.no_grad():
        expected = torch.nn.Sequential(*(seeded_layer(s) for s in specs))(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4 and np.abs(expected).max() > 1e-3
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["output"]


def test_subnets_share_their_layers_exports(tiny_space, tmp_path):
    a, b = tiny_space.random_archs(2, seed=12)
    export_arch(tiny_space, a, cache_dir=tmp_path)
    n_files = len(list(tmp_path.glob("*.onnx")))
    same_layers = tiny_space.validate(a.to_json())  # the same subnet again: nothing new
    export_arch(tiny_space, same_layers, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.onnx"))) == n_files
    export_arch(tiny_space, b, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.onnx"))) > n_files
