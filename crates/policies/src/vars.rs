//! The variables a policy may read, named as KrakenD names them, and the set
//! of them a compiled program references (so only those are built).

/// One variable of the evaluation context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Var {
    ReqMethod,
    ReqPath,
    ReqParams,
    ReqHeaders,
    ReqQuerystring,
    ReqBody,
    Jwt,
    RespStatus,
    RespMetadataStatus,
    RespHeaders,
    RespMetadataHeaders,
    RespData,
    RespCompleted,
    Now,
}

impl Var {
    /// Every variable.
    pub(crate) const ALL: [Var; 14] = [
        Var::ReqMethod,
        Var::ReqPath,
        Var::ReqParams,
        Var::ReqHeaders,
        Var::ReqQuerystring,
        Var::ReqBody,
        Var::Jwt,
        Var::RespStatus,
        Var::RespMetadataStatus,
        Var::RespHeaders,
        Var::RespMetadataHeaders,
        Var::RespData,
        Var::RespCompleted,
        Var::Now,
    ];

    /// The name a policy uses.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Var::ReqMethod => "req_method",
            Var::ReqPath => "req_path",
            Var::ReqParams => "req_params",
            Var::ReqHeaders => "req_headers",
            Var::ReqQuerystring => "req_querystring",
            Var::ReqBody => "req_body",
            Var::Jwt => "JWT",
            Var::RespStatus => "resp_status",
            Var::RespMetadataStatus => "resp_metadata_status",
            Var::RespHeaders => "resp_headers",
            Var::RespMetadataHeaders => "resp_metadata_headers",
            Var::RespData => "resp_data",
            Var::RespCompleted => "resp_completed",
            Var::Now => "now",
        }
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Whether the variable describes the upstream response.
    pub(crate) const fn is_response(self) -> bool {
        matches!(
            self,
            Var::RespStatus
                | Var::RespMetadataStatus
                | Var::RespHeaders
                | Var::RespMetadataHeaders
                | Var::RespData
                | Var::RespCompleted
        )
    }
}

/// A set of [`Var`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VarSet(u32);

impl VarSet {
    /// Adds a variable.
    pub(crate) fn insert(&mut self, var: Var) {
        self.0 |= var.bit();
    }

    /// Whether the set holds `var`.
    pub(crate) const fn contains(self, var: Var) -> bool {
        self.0 & var.bit() != 0
    }

    /// Whether the set holds any of `vars`.
    pub(crate) fn contains_any(self, vars: &[Var]) -> bool {
        vars.iter().any(|v| self.contains(*v))
    }

    /// Both sets together.
    #[must_use]
    pub(crate) const fn union(self, other: VarSet) -> VarSet {
        VarSet(self.0 | other.0)
    }

    /// Whether the set holds a response variable.
    pub(crate) fn has_response_var(self) -> bool {
        Var::ALL
            .iter()
            .any(|v| v.is_response() && self.contains(*v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets() {
        let mut set = VarSet::default();
        assert!(!set.contains(Var::ReqHeaders));
        set.insert(Var::ReqHeaders);
        assert!(set.contains(Var::ReqHeaders));
        assert!(!set.has_response_var());
        let mut other = VarSet::default();
        other.insert(Var::RespData);
        let both = set.union(other);
        assert!(both.contains_any(&[Var::RespData]) && both.has_response_var());
    }
}
