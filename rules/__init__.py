"""The pure rules engine: program document -> checked, compiled program -> evaluation with explanation.

No database, no web, no clock: time is an input. Typical use::

    program = rules.load_program(text)          # YAML or JSON; raises rules.ProgramError
    result = rules.evaluate(program, tx, member, outlet, explain=True)
    result.total, result.rules, result.explanation
"""

from rules.campaigns import holdout_of, in_control
from rules.context import Customer, Event, Item, Member, Outlet, Transaction
from rules.document import ProgramDocument
from rules.engine import CompiledProgram, Result, compile_program, evaluate
from rules.errors import EvaluationError, Issue, ProgramError, RulesError
from rules.interpret import segment_of
from rules.program import CheckedProgram, load_program, load_program_data

__all__ = [
    "CheckedProgram",
    "CompiledProgram",
    "Customer",
    "EvaluationError",
    "Event",
    "Issue",
    "Item",
    "Member",
    "Outlet",
    "ProgramDocument",
    "ProgramError",
    "Result",
    "RulesError",
    "Transaction",
    "compile_program",
    "evaluate",
    "holdout_of",
    "in_control",
    "load_program",
    "load_program_data",
    "segment_of",
]
