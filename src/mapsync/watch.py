"""Monitors evaluated over gathered facts; incidents raised and cleared. (Being written: issue 15.)"""
