"""Alerts: rules over the store and the Portal watch, fired once per episode, sent to the log, a
webhook and e-mail.

Modules: ``model`` (``Finding``, ``Episode``, ``PortalFacts``, the ``Rule`` and ``Sink``
protocols), ``history`` (the ``alert_episodes`` table: reads for people and the console, the
evaluator's writes), ``rules`` (the rules ``alerts:`` of receiver.yaml turns on), ``sinks`` (log,
webhook, e-mail), ``evaluator`` (rules to episodes to sinks). ``receiver.runtime.alerting`` runs
the evaluator inside ``serve`` or ``worker``; ``receiver alerts check`` runs it once.

The read API for other components (the console): ``episodes(store, active_only=False)``.
"""

from receiver.alerts.evaluator import Evaluation, Evaluator, evaluate_periodically
from receiver.alerts.history import episodes, last_check
from receiver.alerts.model import Episode, Finding, PortalFacts, PortalFactsSource, Rule, Sink
from receiver.alerts.rules import rules_from_settings
from receiver.alerts.sinks import EmailSink, LogSink, WebhookSink, close_sinks, sinks_from_settings

__all__ = [
    "EmailSink",
    "Episode",
    "Evaluation",
    "Evaluator",
    "Finding",
    "LogSink",
    "PortalFacts",
    "PortalFactsSource",
    "Rule",
    "Sink",
    "WebhookSink",
    "close_sinks",
    "episodes",
    "evaluate_periodically",
    "last_check",
    "rules_from_settings",
    "sinks_from_settings",
]
