"""Widgets of the patient chart and the lab detail window: grouped result tables, vital-sign
trend charts and the loading / error line of a panel."""
