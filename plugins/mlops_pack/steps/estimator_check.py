"""Does the spec's estimator exist, suit the task and take the given params?

The schema can only see strings: ``estimator.class`` and ``estimator.params`` become
meaningful once scikit-learn is imported, so this lives in the step world. Without it a
misspelt class or a regressor in a classification spec trains, registers a version and
only then crashes in evaluate (exit 1, retried). ``check-spec`` and the train step both
call :func:`make_estimator`, so the rules are checked the same way in both places.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from typing import Any

from mlops_pack.errors import SpecError
from mlops_pack.spec import ModelSpec

_KIND = {"classification": "classifier", "regression": "regressor"}


def make_estimator(spec: ModelSpec, source: str) -> Any:
    """The spec's estimator, unfitted, with its params; ``SpecError`` naming the field if not.

    :param source: the spec file, named in every message.
    """
    cls = _import_class(spec.estimator.class_path, source)
    _check_param_names(cls, spec, source)
    try:
        estimator = cls(**spec.estimator.params)
    except TypeError as exc:  # e.g. a meta-estimator's required argument is missing
        raise SpecError(
            f"{source}: estimator.params: {cls.__name__} cannot be created ({exc}); "
            "add the required parameters under estimator.params",
            {"file": source, "field": "estimator.params"},
        ) from None
    _check_param_values(estimator, source)
    _check_kind(estimator, spec, source)
    return estimator


def _import_class(class_path: str, source: str) -> type:
    module_name, _, class_name = class_path.rpartition(".")
    field = "estimator.class"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(
            f"{source}: {field}: cannot import module {module_name!r} ({exc}); "
            "use a scikit-learn module path such as sklearn.ensemble",
            {"file": source, "field": field},
        ) from None
    found = getattr(module, class_name, None)
    if not isinstance(found, type) or not hasattr(found, "fit"):
        public = [n for n in dir(module) if not n.startswith("_")]
        close = difflib.get_close_matches(class_name, public, n=3)
        hint = (
            f"did you mean {', '.join(f'{module_name}.{c}' for c in close)}?"
            if close
            else (f"see the estimators in {module_name}")
        )
        raise SpecError(
            f"{source}: {field}: {class_path!r} is not an estimator class in {module_name}; {hint}",
            {"file": source, "field": field},
        )
    return found


def _check_param_names(cls: type, spec: ModelSpec, source: str) -> None:
    signature = inspect.signature(cls.__init__)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return  # takes any keyword: the constructor or fit will judge
    accepted = sorted(n for n in signature.parameters if n != "self")
    unknown = [name for name in spec.estimator.params if name not in accepted]
    if not unknown:
        return
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, accepted, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"it takes: {', '.join(accepted)}"
        lines.append(
            f"{source}: estimator.params.{name}: {cls.__name__} takes no parameter {name!r}; {hint}"
        )
    raise SpecError(
        "\n".join(lines),
        {"file": source, "fields": [f"estimator.params.{n}" for n in unknown]},
    )


def _check_param_values(estimator: Any, source: str) -> None:
    # scikit-learn checks param values only in fit(); its own validator (present on every
    # built-in estimator since 1.2, not public API) runs the same rules without data.
    validate = getattr(estimator, "_validate_params", None)
    if validate is None:
        return
    try:
        validate()
    except (ValueError, TypeError) as exc:
        named = re.search(r"The '(\w+)' parameter", str(exc))
        field = f"estimator.params.{named.group(1)}" if named else "estimator.params"
        raise SpecError(f"{source}: {field}: {exc}", {"file": source, "field": field}) from None


def _check_kind(estimator: Any, spec: ModelSpec, source: str) -> None:
    from sklearn.base import is_classifier, is_regressor

    wanted = _KIND[spec.task]
    is_wanted = is_classifier if spec.task == "classification" else is_regressor
    class_path = spec.estimator.class_path
    if not is_wanted(estimator):
        other = "Classifier" if wanted == "classifier" else "Regressor"
        mine = "Regressor" if wanted == "classifier" else "Classifier"
        suggestion = (
            f" (e.g. {class_path.replace(mine, other)})" if class_path.endswith(mine) else ""
        )
        raise SpecError(
            f"{source}: estimator.class: {class_path} is not a {wanted}, but task is "
            f"{spec.task!r}; use a scikit-learn {wanted}{suggestion} or change 'task'",
            {"file": source, "field": "estimator.class"},
        )
    if spec.task == "classification" and not hasattr(estimator, "predict_proba"):
        # Evaluation scores probabilities (roc_auc, log_loss, brier, the threshold).
        raise SpecError(
            f"{source}: estimator.class: {class_path} with these params has no "
            "predict_proba, which evaluation needs; choose a probabilistic classifier "
            "(or, for sklearn.svm.SVC, set estimator.params.probability: true)",
            {"file": source, "field": "estimator.class"},
        )
