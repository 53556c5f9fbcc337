"""Transactions: private overlays validated by generation at commit."""

from pyxenstored.transactions.transaction import EXACT as EXACT
from pyxenstored.transactions.transaction import SUBTREE as SUBTREE
from pyxenstored.transactions.transaction import TransactionView as TransactionView
