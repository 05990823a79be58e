"""One backup run, in the order the run visits it (read the modules in this order):

    context   what a run is given (BackupRequest) and what travels through it (RunContext)
    run       run_backup: policies -> plan -> lock -> recover -> each quiesce group
    job       admitting a volume (source, unfinished restore, encryption, destination) and its phases
    steps     the step list a group's run executes; `coord plan` prints the same list (plan.py)
    hooks     before hooks, after hooks
    window    the quiesce window: executes the window's steps (pause/stop, snapshot, archive, resume)
    quiesce   pause/stop containers, journaled, and put them back however the window ends
    snapshot  link a volume's tree, bring it up to date while paused, drop it
    archive   one volume to its .partial file, journaled
    auto      strategy auto: judge the live read, escalate once
    publish   decide status -> check -> rename + manifest -> other targets -> retention
    upload    to a target: temporary name -> check -> rename -> manifest last; streaming to a remote
    manifest  the manifest document
    plan      the steps in words, for `coord plan`

This package imports nothing from its own `__init__`: import the module you need.
"""
