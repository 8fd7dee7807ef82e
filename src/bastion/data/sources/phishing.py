"""``phishing:PATH``: UCI Phishing Websites (Mohammad, Thabtah, McCluskey 2012), header-less CSV or ARFF.

PATH is the file or a folder holding exactly one .arff, .csv or .txt file; stratified 70/10/20.
"""

from __future__ import annotations

from pathlib import Path

from bastion.data.formats.arff import read_arff_with_schema
from bastion.data.formats.csv import read_csv_with_schema
from bastion.data.tabular.loading import TabularSource, register_tabular
from bastion.data.tabular.schema import Feature, FeatureKind, TabularSchema
from bastion.data.tabular.table import OnBadRows, TabularTable

_PHISHING_FEATURES = (
    ("having_IP_Address", "-1 1", True),
    ("URL_Length", "-1 0 1", True),
    ("Shortining_Service", "-1 1", True),
    ("having_At_Symbol", "-1 1", True),
    ("double_slash_redirecting", "-1 1", True),
    ("Prefix_Suffix", "-1 1", True),
    ("having_Sub_Domain", "-1 0 1", True),
    ("SSLfinal_State", "-1 0 1", False),
    ("Domain_registeration_length", "-1 1", True),
    ("Favicon", "-1 1", True),
    ("port", "-1 1", True),
    ("HTTPS_token", "-1 1", True),
    ("Request_URL", "-1 1", True),
    ("URL_of_Anchor", "-1 0 1", True),
    ("Links_in_tags", "-1 0 1", True),
    ("SFH", "-1 0 1", True),
    ("Submitting_to_email", "-1 1", True),
    ("Abnormal_URL", "-1 1", True),
    ("Redirect", "0 1", True),
    ("on_mouseover", "-1 1", True),
    ("RightClick", "-1 1", True),
    ("popUpWidnow", "-1 1", True),
    ("Iframe", "-1 1", True),
    ("age_of_domain", "-1 1", False),
    ("DNSRecord", "-1 1", False),
    ("web_traffic", "-1 0 1", False),
    ("Page_Rank", "-1 1", False),
    ("Google_Index", "-1 1", False),
    ("Links_pointing_to_page", "-1 0 1", False),
    ("Statistical_report", "-1 1", False),
)


def phishing_schema() -> TabularSchema:
    """UCI phishing schema: 30 discrete features, label Result (-1 phishing, 1 legitimate; benign class 0).

    Allowed values per feature are the feature definitions' outcomes (legitimate 1, suspicious 0,
    phishing -1; Redirect is 0/1), which are also the sets found in the published data.

    Mutable: what the author of a phishing page controls, i.e. the URL (IP address, length, shortener,
    '@', '//', '-', sub-domains, port, 'https' token), the page content (favicon, request / anchor /
    tag / form targets, mailto, redirects, mouse-over, right click, pop-ups, iframes), and the paid-for
    registration length and WHOIS identity (Domain_registeration_length, Abnormal_URL). Immutable:
    third-party observations that need time or reputation: age_of_domain, DNSRecord, web_traffic,
    Page_Rank, Google_Index, Links_pointing_to_page, Statistical_report, and SSLfinal_State, which
    requires a certificate from a trusted issuer at least a year old (it cannot be back-dated).
    """
    features = tuple(
        Feature(
            name=name,
            kind=FeatureKind.DISCRETE,
            values=tuple(float(v) for v in values.split()),
            mutable=mutable,
        )
        for name, values, mutable in _PHISHING_FEATURES
    )
    return TabularSchema(
        name="uci-phishing",
        features=features,
        label="Result",
        classes=("legitimate", "phishing"),
        benign=0,
        label_values=(("1", "legitimate"), ("-1", "phishing")),
        description="UCI Phishing Websites: header-less CSV (the ARFF data section) or the original ARFF.",
    )


def read_phishing_csv(path: str | Path, *, on_bad_rows: OnBadRows = "drop") -> TabularTable:
    """Header-less CSV: the 30 features in the documented order, then Result."""
    return read_csv_with_schema(path, phishing_schema(), header=False, on_bad_rows=on_bad_rows)


def read_phishing_arff(path: str | Path, *, on_bad_rows: OnBadRows = "drop") -> TabularTable:
    """The original ARFF file (``@attribute having_IP_Address { -1,1 }`` ... ``@data``)."""
    return read_arff_with_schema(path, phishing_schema(), on_bad_rows=on_bad_rows)


def read_phishing(path: str | Path, *, on_bad_rows: OnBadRows = "drop") -> TabularTable:
    """ARFF when the name ends in .arff, else the header-less CSV."""
    if str(path).lower().endswith(".arff"):
        return read_phishing_arff(path, on_bad_rows=on_bad_rows)
    return read_phishing_csv(path, on_bad_rows=on_bad_rows)


PHISHING = register_tabular(
    TabularSource(
        name="phishing",
        read=lambda path, options: read_phishing(path, on_bad_rows=options["on_bad_rows"]),
        patterns=("*.arff", "*.csv", "*.txt"),
        header=False,
    )
)
