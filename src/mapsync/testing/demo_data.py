"""The demo's sample data: a messy ERP and a portal with tighter columns (SQLite)."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from pathlib import Path

ERP_DDL = """
CREATE TABLE customers (customer_no TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, country TEXT,
  status TEXT NOT NULL, credit_limit NUMERIC, last_modified TEXT NOT NULL);
CREATE TABLE products (item_no TEXT PRIMARY KEY, descr TEXT NOT NULL, price NUMERIC,
  item_status TEXT NOT NULL, last_modified TEXT NOT NULL);
CREATE TABLE orders (order_no INTEGER PRIMARY KEY, customer_no TEXT NOT NULL, order_date TEXT,
  status TEXT NOT NULL, last_modified TEXT NOT NULL);
CREATE TABLE order_lines (order_no INTEGER NOT NULL, line_no INTEGER NOT NULL, item_no TEXT NOT NULL,
  qty INTEGER NOT NULL, unit_price NUMERIC, PRIMARY KEY (order_no, line_no));
CREATE TABLE invoices (invoice_no TEXT PRIMARY KEY, customer_no TEXT NOT NULL, due_date TEXT,
  balance NUMERIC NOT NULL, open INTEGER NOT NULL, last_modified TEXT NOT NULL);
CREATE INDEX customers_lm ON customers (last_modified, customer_no);
CREATE INDEX products_lm ON products (last_modified, item_no);
CREATE INDEX orders_lm ON orders (last_modified, order_no);
"""

# SQLite does not enforce these lengths; mapsync reads them from the catalog and checks them.
PORTAL_DDL = """
CREATE TABLE accounts (ref_id VARCHAR(20) PRIMARY KEY, nm VARCHAR(150) NOT NULL, email VARCHAR(80),
  country CHAR(3), status SMALLINT NOT NULL, credit_limit NUMERIC(12, 2));
CREATE TABLE products (sku VARCHAR(30) PRIMARY KEY, nm VARCHAR(80) NOT NULL, price NUMERIC(10, 2),
  active SMALLINT NOT NULL);
CREATE TABLE orders (order_no INTEGER PRIMARY KEY, account_ref VARCHAR(20) NOT NULL, ordered_on DATE,
  status VARCHAR(12) NOT NULL);
CREATE TABLE order_lines (order_no INTEGER NOT NULL, line_no INTEGER NOT NULL, sku VARCHAR(30) NOT NULL,
  qty INTEGER NOT NULL, unit_price NUMERIC(10, 2), PRIMARY KEY (order_no, line_no));
CREATE TABLE invoices (invoice_no VARCHAR(20) PRIMARY KEY, account_ref VARCHAR(20) NOT NULL,
  due_on DATE, balance NUMERIC(12, 2) NOT NULL);
"""

CUSTOMERS = 200
# Spellings as they come out of years of hand-typed ERP data, with how often each appears.
COUNTRIES = {
    "US": 30, "U.S.A.": 10, "United States": 20, "USA": 15, "Deutschland": 12, "Germany": 10, "DE": 5,
    "UK": 10, "Great Britain": 6, "United Kingdom": 6, "England": 4, "France": 8, "Holland": 4,
    "Netherlands": 4, "Canada": 8, "México": 3, "Österreich": 3, "Schweiz": 3, "": 3,
}  # fmt: skip
UNPLACEABLE = {13: "Untied States", 57: "Germny", 101: "Europe", 144: "N/A", 166: "Untied States"}
UNMAPPED_STATUS = {29: "X", 88: "X", 175: "X"}  # a legacy "blocked" code the sheet does not map
LONG_NAME = (5, 77, 150)
LONG_EMAIL = 120
FIRST = ["Acme", "Nordwind", "Blue Ridge", "Harbor Lane", "Meridian", "Alpine", "Keystone", "Summit",
         "Riverside", "Oak & Iron", "Lakeview", "Granite", "Silverline", "Pioneer", "Bayside",
         "Westfield"]  # fmt: skip
TRADE = ["Supply", "Foods", "Tools", "Outfitters", "Hardware", "Electric", "Logistics", "Textiles", "Medical",
         "Garden", "Plumbing"]  # fmt: skip
FORM = ["Inc.", "LLC", "GmbH", "Ltd", "B.V.", "S.A.", "Co.", "AG"]
LEGAL_TAIL = (
    " (formerly {} Trading Company), a division of {} Holdings International Incorporated, "
    "accounts payable department, attention: purchasing and receiving"
)


def ts(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def build_erp(path: Path, now: dt.datetime) -> dict[str, int]:
    rnd = random.Random(7)
    past = [now - dt.timedelta(days=90) + dt.timedelta(minutes=37 * i) for i in range(3000)]
    spellings = [s for s, n in COUNTRIES.items() for _ in range(n)]
    customers = []
    for i in range(1, CUSTOMERS + 1):
        name = f"{rnd.choice(FIRST)} {rnd.choice(TRADE)} {rnd.choice(FORM)}"
        if i in LONG_NAME:
            name += LEGAL_TAIL.format(rnd.choice(FIRST), rnd.choice(FIRST))
        slug = name.split()[0].lower().strip("&")
        email = f"orders@{slug}{i}.example.com"
        if i == LONG_EMAIL:
            email = "; ".join(f"{p}@{slug}-{i}-wholesale.example.com" for p in ("ap", "purchasing", "ceo"))
        country = UNPLACEABLE.get(i) or rnd.choice(spellings)
        status = UNMAPPED_STATUS.get(i) or rnd.choice("AAAAAAAHI")
        limit = rnd.choice([5000, 10000, 25000, 50000, 7500.5])
        customers.append((f"C{10000 + i}", name, email, country, status, limit, ts(past[i * 7])))
    # products came in by one bulk import: they all share one timestamp
    imported = ts(past[100])
    products = [
        (
            f"P-{1000 + i}",
            f"{rnd.choice(FIRST)} {rnd.choice(TRADE)} item #{i}",
            round(rnd.uniform(2, 400), 2),
            "D" if i in (9, 31) else rnd.choice("AAAAI"),
            imported,
        )
        for i in range(1, 41)
    ]
    orders, lines = [], []
    for n in range(1, 121):
        placed = past[1500 + n * 9]
        order_no = 50000 + n
        orders.append(
            (
                order_no,
                f"C{10000 + rnd.randint(1, CUSTOMERS)}",
                placed.date().isoformat(),
                rnd.choice("NNRS"),
                ts(placed),
            )
        )
        for line in range(1, rnd.randint(1, 5) + 1):
            item = rnd.choice(products)
            lines.append((order_no, line, item[0], rnd.randint(1, 24), item[2]))
    invoices = [
        (
            f"INV-{70000 + n}",
            f"C{10000 + rnd.randint(1, CUSTOMERS)}",
            (now + dt.timedelta(days=rnd.randint(-20, 45))).date().isoformat(),
            round(rnd.uniform(50, 9000), 2),
            1 if n <= 60 else 0,
            ts(past[2000 + n]),
        )
        for n in range(1, 91)
    ]
    with sqlite3.connect(path) as db:
        db.executescript(ERP_DDL)
        db.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)", customers)
        db.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?)", products)
        db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", orders)
        db.executemany("INSERT INTO order_lines VALUES (?, ?, ?, ?, ?)", lines)
        db.executemany("INSERT INTO invoices VALUES (?, ?, ?, ?, ?, ?)", invoices)
    db.close()
    return {
        "customers": len(customers),
        "products": len(products),
        "orders": len(orders),
        "order lines": len(lines),
        "invoices": len(invoices),
        "of them open": 60,
    }


def build_portal(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(PORTAL_DDL)
    db.close()


def apply_changes(path: Path, moment: dt.datetime) -> list[str]:
    """Change rows in the ERP, all with the same last_modified (several rows sharing one stamp)."""
    stamp = ts(moment)
    done = []
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO customers VALUES ('C10201', 'Nordwind Handels GmbH', 'einkauf@nordwind.example.de', "
            "'Deutschland', 'A', 20000, ?)",
            (stamp,),
        )
        done.append("new customer C10201 'Nordwind Handels GmbH', country 'Deutschland'")
        db.execute(
            "UPDATE customers SET name = 'Meridian Foods International Ltd', last_modified = ? "
            "WHERE customer_no = 'C10002'",
            (stamp,),
        )
        done.append("C10002 renamed to 'Meridian Foods International Ltd'")
        db.execute(
            "UPDATE customers SET country = 'United States', last_modified = ? WHERE customer_no = 'C10013'",
            (stamp,),
        )
        done.append("C10013 country fixed at the source: 'Untied States' -> 'United States'")
        db.execute("UPDATE customers SET last_modified = ? WHERE customer_no = 'C10040'", (stamp,))
        done.append("C10040 touched (last_modified bumped, nothing else changed)")
        db.execute(
            "INSERT INTO orders VALUES (50121, 'C10201', ?, 'N', ?)", (moment.date().isoformat(), stamp)
        )
        db.executemany(
            "INSERT INTO order_lines VALUES (50121, ?, ?, ?, ?)",
            [(1, "P-1003", 12, None), (2, "P-1007", 4, None), (3, "P-1012", 30, None)],
        )
        db.execute(
            "UPDATE order_lines SET unit_price = (SELECT price FROM products p "
            "WHERE p.item_no = order_lines.item_no) WHERE order_no = 50121"
        )
        done.append("new order 50121 for C10201 with 3 lines")
        db.execute("UPDATE products SET price = 19.99, last_modified = ? WHERE item_no = 'P-1007'", (stamp,))
        done.append("product P-1007 price -> 19.99")
        db.execute(
            "UPDATE invoices SET balance = balance - 50, last_modified = ? WHERE invoice_no = 'INV-70001'",
            (stamp,),
        )
        done.append("invoice INV-70001 part-paid (balance - 50.00)")
    db.close()
    return done
