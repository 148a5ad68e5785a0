//! Marketplaces: an org can pay for Highrise out of a commitment with its cloud, through
//! that cloud's marketplace. The cloud then has to see the consumption: such an org's
//! clusters run on that cloud, and nowhere else.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Marketplace {
    Aws,
    Azure,
    Gcp,
}

impl Marketplace {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "aws" => Some(Self::Aws),
            "azure" => Some(Self::Azure),
            "gcp" => Some(Self::Gcp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Azure => "azure",
            Self::Gcp => "gcp",
        }
    }

    /// The marketplace's name as people know it.
    pub fn title(self) -> &'static str {
        match self {
            Self::Aws => "AWS Marketplace",
            Self::Azure => "Azure Marketplace",
            Self::Gcp => "Google Cloud Marketplace",
        }
    }

    /// The cloud whose consumption the marketplace's billing counts.
    pub fn cloud(self) -> &'static str {
        self.as_str()
    }

    /// Checks an account reference as the marketplace issues it: AWS a 12-digit customer
    /// account id (with its License Manager licence ARN), Azure a SaaS subscription id (a
    /// GUID), GCP a usage reporting id.
    pub fn check_account(self, account: &str, licence: Option<&str>) -> Result<(), String> {
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        match self {
            Self::Aws => {
                if !digits(account, 12) {
                    return Err("account: an AWS customer account id is 12 digits".into());
                }
                let arn_ok = licence.is_some_and(|l| {
                    l.strip_prefix("arn:aws:license-manager::")
                        .and_then(|r| r.split_once(":license:l-"))
                        .is_some_and(|(acct, id)| digits(acct, 12) && id.len() == 32 && hex(id))
                });
                if !arn_ok {
                    return Err("licence: the AWS License Manager licence ARN (arn:aws:license-manager::<account>:license:l-<32 hex>)".into());
                }
            }
            Self::Azure => {
                let parts: Vec<&str> = account.split('-').collect();
                let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
                if lens != [8, 4, 4, 4, 12] || !parts.iter().all(|p| hex(p)) {
                    return Err("account: an Azure SaaS subscription id is a GUID".into());
                }
            }
            Self::Gcp => {
                let ok = (1..=128).contains(&account.len())
                    && account
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b));
                if !ok {
                    return Err("account: a GCP usage reporting id (letters, digits, - _ . : /; up to 128)".into());
                }
            }
        }
        if self != Self::Aws && licence.is_some() {
            return Err("licence: only AWS Marketplace links carry a licence ARN".into());
        }
        Ok(())
    }
}

/// Whether a cluster of an org billed through `m` may run in a cloud of `family` (the real
/// cloud a land's cloud is, e.g. `aws`): only the marketplace's own cloud counts toward
/// the commitment.
pub fn allows(m: Option<Marketplace>, family: &str) -> bool {
    m.is_none_or(|m| m.cloud() == family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_checked_as_each_marketplace_issues_them() {
        let arn = "arn:aws:license-manager::123456789012:license:l-0123456789abcdef0123456789abcdef";
        assert!(Marketplace::Aws.check_account("123456789012", Some(arn)).is_ok());
        assert!(Marketplace::Aws.check_account("12345678901", Some(arn)).is_err());
        assert!(
            Marketplace::Aws.check_account("123456789012", None).is_err(),
            "the licence is required"
        );
        assert!(Marketplace::Aws
            .check_account("123456789012", Some("arn:aws:license-manager::1:license:l-0"))
            .is_err());
        assert!(Marketplace::Azure
            .check_account("0f8fad5b-d9cb-469f-a165-70867728950e", None)
            .is_ok());
        assert!(Marketplace::Azure
            .check_account("0f8fad5b-d9cb-469f-a165", None)
            .is_err());
        assert!(Marketplace::Azure
            .check_account("0f8fad5b-d9cb-469f-a165-70867728950e", Some(arn))
            .is_err());
        assert!(Marketplace::Gcp.check_account("usage-reporting-id:abc", None).is_ok());
        assert!(Marketplace::Gcp.check_account("", None).is_err());
        assert!(Marketplace::Gcp.check_account("a b", None).is_err());
    }

    #[test]
    fn an_org_billed_through_a_marketplace_stays_on_its_cloud() {
        assert!(allows(None, "gcp"));
        assert!(allows(Some(Marketplace::Aws), "aws"));
        assert!(!allows(Some(Marketplace::Aws), "gcp"));
        assert!(!allows(Some(Marketplace::Gcp), "azure"));
        for m in ["aws", "azure", "gcp"] {
            assert_eq!(Marketplace::parse(m).map(Marketplace::as_str), Some(m));
        }
        assert_eq!(Marketplace::parse("oracle"), None);
    }
}
