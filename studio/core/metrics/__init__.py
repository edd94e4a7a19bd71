"""Scoring a model's reply against the expected one: pure functions on text, no model and no torch (evaluation
and, later, training rewards share them). Each metric returns a `MetricResult`; `registry` names them."""
