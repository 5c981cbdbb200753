"""The portal's pages that only read: every one asks the domain services of the composition
root, and the VM and job pages use the same message builders as the gRPC API
(``protection_api.vm_status``, ``job_msg``), so a page shows what ``asr`` shows."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from flask import Flask, abort, jsonify, redirect, render_template, request, url_for

from asrerrors import NotFound, StateConflict
from cloudsvc.events import EventFilter
from cloudsvc.lifecycle import ItemState
from cloudsvc.portal import charts
from cloudsvc.portal.actions import BUTTONS
from cloudsvc.protection_api import job_msg, severity_of, vm_status
from cloudsvc.service import CloudService

HEALTHS = ("Normal", "Warning", "Critical")


def register(app: Flask, svc: CloudService) -> None:
    def nav(v: Any, **kw: Any) -> dict[str, Any]:
        return {"vault": v, "vaults": svc.vaults.list_vaults(), **kw}

    @app.get("/")
    def home() -> Any:
        vaults = svc.vaults.list_vaults()
        if vaults:
            return redirect(url_for("dashboard", vault=vaults[0].name))
        return render_template("novault.html")

    @app.get("/vaults/<vault>/")
    def dashboard(vault: str) -> Any:
        v = svc.vaults.get(vault)
        now = svc.clock.now()
        figures = svc.replication.figures(v.id)
        health = Counter(f.health.state for f in figures)
        series = charts.rpo_series(svc.replication.point_times(v.id, now - charts.DAY_S), now)
        running = svc.jobs.list_jobs(v.id, 20, state="InProgress") + svc.jobs.list_jobs(v.id, 20, state="Suspended")
        failed = [j for j in svc.jobs.list_jobs(v.id, 50, state="Failed") if j["ended_at"] >= now - charts.DAY_S]
        servers = [s for s in _servers(svc, v.id) if s["state"] != "Connected"]
        return render_template("dashboard.html", **nav(v, health=[(h, health.get(h, 0)) for h in HEALTHS],
                                                         protected=len(figures), rpo=charts.rpo_chart(series),
                                                         rpo_now=series[-1][1], running=running, failed=failed,
                                                         disconnected=servers))

    @app.get("/vaults/<vault>/vms")
    def vms(vault: str) -> Any:
        v = svc.vaults.get(vault)
        cloud, health, state, q = (request.args.get(k, "") for k in ("cloud", "health", "state", "q"))
        figures = {f.item.vm_id: f for f in svc.replication.figures(v.id)}
        rows = []
        for r in svc.inventory.vms(v.id, cloud):
            f = figures.get(r["vm_id"])
            row = {"name": r["name"], "cloud": r["cloud"], "host": r["host"],
                   "state": f.item.state.value if f else ItemState.UNPROTECTED.value,
                   "health": f.health.state if f else "", "rpo": f.rpo if f else None}
            if (health and row["health"] != health) or (state and row["state"] != state) or (
                    q and q.lower() not in str(r["name"]).lower()):
                continue
            rows.append(row)
        clouds = [str(c["name"]) for c in svc.inventory.clouds(v.id)]
        return render_template("vms.html", **nav(v, rows=rows, clouds=clouds, states=[s.value for s in ItemState],
                                                   healths=HEALTHS, f={"cloud": cloud, "health": health,
                                                                       "state": state, "q": q}))

    @app.get("/vaults/<vault>/vms/<vm>")
    def vm_page(vault: str, vm: str) -> Any:
        v = svc.vaults.get(vault)
        st = vm_status(svc, v.id, svc.inventory.find_vm(v.id, vm))
        points: list[tuple[float, str]] = []
        item = svc.items.get(v.id, st.vm.vm_id)
        if item is not None and not item.site_to_site:
            try:
                points = [(p.created_at, str(p.kind)) for p, _ in svc.replication.points(v.id, item.vm_id, vm)]
            except (NotFound, StateConflict):
                points = []
        events = svc.events.list(v.id, EventFilter(vm_id=st.vm.vm_id, limit=20))
        jobs = svc.jobs.list_jobs(v.id, 10, target=st.vm.name)
        buttons = [(op, label) for op, label in BUTTONS if op in st.allowed_operations]
        return render_template("vm.html", **nav(v, st=st, timeline=charts.timeline(points, svc.clock.now()),
                                                  points=list(reversed(points[-10:])), events=events, jobs=jobs,
                                                  buttons=buttons))

    @app.get("/vaults/<vault>/plans")
    def plans(vault: str) -> Any:
        v = svc.vaults.get(vault)
        return render_template("plans.html", **nav(v, plans=[svc.plans.message(v.id, n)
                                                             for n in svc.plans.names(v.id)]))

    @app.get("/vaults/<vault>/plans/<plan>")
    def plan_page(vault: str, plan: str) -> Any:
        v = svc.vaults.get(vault)
        p = svc.plans.message(v.id, plan)
        jobs = svc.jobs.list_jobs(v.id, 10, target=plan)
        return render_template("plan.html", **nav(v, plan=p, jobs=jobs))

    @app.get("/vaults/<vault>/jobs")
    def jobs(vault: str) -> Any:
        v = svc.vaults.get(vault)
        state = request.args.get("state", "")
        rows = svc.jobs.list_jobs(v.id, 100, state=state)
        return render_template("jobs.html", **nav(v, jobs=rows, state=state))

    @app.get("/vaults/<vault>/jobs/<job_id>")
    def job_page(vault: str, job_id: str) -> Any:
        v = svc.vaults.get(vault)
        job, tasks = svc.jobs.get(v.id, job_id)
        return render_template("job.html", **nav(v, job=job_msg(job, tasks)))

    @app.get("/vaults/<vault>/jobs/<job_id>/progress")
    def job_progress(vault: str, job_id: str) -> Any:
        """The job as JSON for the page's polling script (static/job.js)."""
        v = svc.vaults.get(vault)
        job, tasks = svc.jobs.get(v.id, job_id)
        m = job_msg(job, tasks)
        return jsonify({"state": m.state, "progress": m.progress,
                        "tasks": [{"name": t.name, "state": t.state, "output": t.output} for t in m.tasks],
                        "error": {"code": m.error.code, "message": m.error.message,
                                  "action": m.error.recommended_action} if m.error.code else None})

    @app.get("/vaults/<vault>/servers")
    def servers(vault: str) -> Any:
        v = svc.vaults.get(vault)
        return render_template("servers.html", **nav(v, servers=_servers(svc, v.id),
                                                       clouds=svc.inventory.clouds(v.id)))

    @app.get("/vaults/<vault>/storage")
    def storage(vault: str) -> Any:
        v = svc.vaults.get(vault)
        return render_template("storage.html", **nav(v, accounts=svc.vaults.list_storage(v.id),
                                                       networks=svc.vaults.list_networks(v.id)))

    @app.get("/vaults/<vault>/billing")
    def billing(vault: str) -> Any:
        v = svc.vaults.get(vault)
        month = request.args.get("month") or dt.datetime.fromtimestamp(svc.clock.now(), dt.UTC).strftime("%Y-%m")
        scenario = request.args.get("scenario", "onprem-to-cloud")
        report = svc.billing.report(v.id, month, scenario)
        chart = charts.bar_chart([(u.name, charge) for u, charge in report.lines], "Charge per protected VM")
        return render_template("billing.html", **nav(v, report=report, chart=chart, month=month, scenario=scenario))

    @app.get("/vaults/<vault>/events")
    def events(vault: str) -> Any:
        v = svc.vaults.get(vault)
        severity = request.args.get("severity", "")
        rows = svc.events.list(v.id, EventFilter(severity=severity_of(severity), limit=200))
        return render_template("events.html", **nav(v, events=rows, severity=severity))

    @app.get("/favicon.ico")
    def favicon() -> Any:
        abort(404)


def _servers(svc: CloudService, vault_id: str) -> list[dict[str, Any]]:
    return [{"role": r["role"], "name": r["name"], "version": r["version"], "provider": r["provider"],
             "last_heartbeat": r["last_heartbeat"], "state": state}
            for r, state in svc.registrar.connection_states(vault_id, svc.config.heartbeat_timeout_seconds)]
