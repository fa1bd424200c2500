"""Budgets and the spend ledger: reserve / settle in Lua, the local spool, admin-made budgets.

`BudgetRegistry` says which budgets apply to a caller, `BudgetLedger` reserves and settles
against them (and appends the spend event), `Spool` keeps settles Redis could not take,
`AlertSender` delivers threshold and exceeded alerts.
"""
