//! Work the session cannot do yet, and what it waits for: the attached server to
//! answer what is in flight, a server from the pool, the end of its tenant's
//! pause (console `PAUSE TENANT`), or the server being reset and given back. At most one unit waits; while it does, no client byte is read.

use super::inbound::Unit;
use crate::router::TenantKey;

/// What the session waits for.
#[derive(Debug, Default)]
pub(super) struct Wait {
    /// The unit of work waiting (routed again when the wait ends).
    stalled: Option<Unit>,
    /// A server was requested for this shard, for this tenant's work (SHOW
    /// TENANTS `waiting`), and not delivered yet.
    awaiting: Option<(usize, Option<TenantKey>)>,
    /// The unit's tenant is paused: it waits for the pause to end.
    paused: Option<TenantKey>,
    /// The server is being reset and returned.
    releasing: bool,
    /// A reload that changed the database's shards waits for the work in
    /// flight to be answered and the server given back
    /// ([`super::core::Core::maybe_reload`]): until then no client frame is
    /// read, so none is routed by the old shard list.
    reload: bool,
    /// The unit asking for a server waited for the work in flight first: no
    /// client byte was read meanwhile, so the client may have left unseen
    /// ([`super::core::Core::unit_waited`]).
    waited: bool,
}

impl Wait {
    /// Keep a unit until it can be routed again.
    pub(super) fn stall(&mut self, unit: Unit) {
        debug_assert!(self.stalled.is_none(), "two units stalled");
        self.stalled = Some(unit);
    }

    /// A unit waits.
    pub(super) fn has_stalled(&self) -> bool {
        self.stalled.is_some()
    }

    /// The unit that waited, to be routed again.
    pub(super) fn take_stalled(&mut self) -> Option<Unit> {
        self.stalled.take()
    }

    /// Ask for a server of `shard` for this unit.
    pub(super) fn request(&mut self, shard: usize, tenant: Option<TenantKey>, unit: Unit) {
        self.stall(unit);
        self.awaiting = Some((shard, tenant));
    }

    /// The shard a server was requested for.
    pub(super) fn awaiting(&self) -> Option<usize> {
        self.awaiting.map(|(s, _)| s)
    }

    /// The tenant whose work waits for the server requested.
    pub(super) fn awaited_tenant(&self) -> Option<TenantKey> {
        self.awaiting.and_then(|(_, t)| t)
    }

    /// Keep a unit whose tenant is paused until the pause ends.
    pub(super) fn pause(&mut self, tenant: TenantKey, unit: Unit) {
        self.stall(unit);
        self.paused = Some(tenant);
    }

    /// The (canonical) tenant whose pause the unit waits for.
    pub(super) fn paused(&self) -> Option<TenantKey> {
        self.paused
    }

    /// The pause ended: the unit is routed again.
    pub(super) fn unpause(&mut self) {
        self.paused = None;
    }

    /// The request ended (a server came, or it could not; a pause ended in a
    /// timeout).
    pub(super) fn delivered(&mut self) {
        self.awaiting = None;
        self.paused = None;
        self.waited = false;
    }

    /// Whether the unit routed now waited for the work in flight (see
    /// [`Wait::waited`]).
    pub(super) fn set_waited(&mut self, waited: bool) {
        self.waited = waited;
    }

    /// The unit asking for a server waited for the work in flight first.
    pub(super) fn waited(&self) -> bool {
        self.waited
    }

    /// The server is being given back.
    pub(super) fn begin_release(&mut self) {
        self.releasing = true;
    }

    /// A reload waits for the work in flight (see [`Wait::reload`]).
    pub(super) fn hold_for_reload(&mut self) {
        self.reload = true;
    }

    /// The reload was taken up (or has nothing to wait for any more).
    pub(super) fn reload_taken(&mut self) {
        self.reload = false;
    }

    /// A reload waits for the work in flight.
    pub(super) fn reload_waits(&self) -> bool {
        self.reload
    }

    /// The server was given back.
    pub(super) fn end_release(&mut self) {
        self.releasing = false;
    }

    /// The server is being reset and returned.
    pub(super) fn releasing(&self) -> bool {
        self.releasing
    }

    /// Nothing waits, and no server is requested or being given back.
    pub(super) fn is_clear(&self) -> bool {
        // Every field named: a new one must be considered here (a session is
        // parked between transactions only when this holds).
        let Wait {
            stalled,
            awaiting,
            paused,
            releasing,
            reload,
            waited,
        } = self;
        stalled.is_none()
            && awaiting.is_none()
            && paused.is_none()
            && !releasing
            && !reload
            && !waited
    }

    /// A server is requested or being given back: client work waits for it.
    pub(super) fn busy(&self) -> bool {
        self.awaiting.is_some() || self.paused.is_some() || self.releasing
    }

    /// Debug-build checks, given whether a server is attached.
    pub(super) fn check(&self, attached: bool) {
        if self.awaiting.is_some() {
            debug_assert!(!attached, "waiting for a server while attached");
            debug_assert!(self.stalled.is_some(), "waiting for a server for nothing");
        }
        if self.paused.is_some() {
            debug_assert!(!attached, "held for a paused tenant while attached");
            debug_assert!(
                self.stalled.is_some(),
                "held for a paused tenant for nothing"
            );
            debug_assert!(self.awaiting.is_none(), "held and waiting for a server");
        }
        debug_assert!(
            !(self.releasing && attached),
            "releasing a server still attached"
        );
    }
}
