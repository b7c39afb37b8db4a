"""The zoo registry: every entry is listed, described, and buildable from its name alone."""
import keras
import numpy as np
import pytest

import zoo


def test_list_models_includes_the_seed_cnn_and_filters_by_pattern():
    assert "cnn" in zoo.list_models()
    assert zoo.list_models("cn*") == ["cnn"]
    assert zoo.list_models("no-such-*") == []


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_spec_names_a_known_task_dataset_and_input(name):
    spec = zoo.get(name)
    assert spec.task in zoo.TASKS
    assert spec.default_dataset
    assert spec.input_spec
    assert spec.description


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_model_builds_uncompiled_from_its_name(name):
    model = zoo.build(name)
    assert isinstance(model, keras.Model)
    assert not model.compiled  # the pipeline compiles it for its task
    spec = zoo.get(name)
    if spec.task == "image_classification":
        assert model.output_shape[-1] == len(spec.labels)


def test_cnn_is_the_seed_architecture():
    model = zoo.build("cnn")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [32, 64]
    assert model.count_params() == 121_930
    probabilities = model(np.zeros((2, 28, 28, 1), np.float32))
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, rtol=1e-5)


def test_overrides_are_cast_to_the_default_type():
    spec = zoo.get("cnn")
    assert spec.resolve_hparams({"dropout": "0.25"})["dropout"] == 0.25
    assert zoo.build("cnn", num_classes="3").output_shape == (None, 3)


def test_unknown_model_and_hyperparameter_name_the_alternatives():
    with pytest.raises(KeyError, match="known models: .*cnn"):
        zoo.get("nope")
    with pytest.raises(KeyError, match="no hyperparameter 'depth'; known: channels"):
        zoo.build("cnn", depth=3)
