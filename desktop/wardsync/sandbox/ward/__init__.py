"""The synthetic ward: seed data, the laboratory and bedside-device clients, the simulator.

`seed.build_ward` gives the resources the sandbox starts with; `lab.LabSystem` and
`devices.WardDevices` write results over the FHIR REST API as a laboratory system and bedside
monitors would; `simulator.WardSimulator` keeps writing them at a configured rate.
"""
