"""KQL detection rules compiled into streaming per-row plans (issue 4).

``RuleSet.load(paths, builtin=True) -> (RuleSet, failures)``; ``ruleset.evaluate(table, row, now)``
returns the :class:`Match` es of one row; ``ruleset.tables_read`` says which tables and columns
the loaded rules need.
"""

from etwsensor.rules.dispatch import RowGate
from etwsensor.rules.errors import RuleFailure
from etwsensor.rules.ruleset import Match, Rule, RuleSet

__all__ = ["Match", "RowGate", "Rule", "RuleFailure", "RuleSet"]
