"""Monitoring plugins: metrics, health, alerts, analytics and reports, the dashboard.

Each is an ordinary plugin written against :mod:`plugin_sdk` only.
"""
