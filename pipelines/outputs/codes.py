"""Every code the pipelines write, in one place (values from docs/reference-facts, checked against
pydicom's DICOM code dictionary where the code is in it).

Concepts without a standard code (SYNTAX score, valve and aortic calcium scores, assessability)
live in the private scheme ``99CARDIONODE``, declared in each SR's CodingSchemeIdentificationSequence
(see :func:`coding_scheme_item`).  docs/outputs.md lists every code.
"""
from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

__all__ = [
    "PRIVATE_SCHEME",
    "PRIVATE_SCHEME_UID",
    "coding_scheme_item",
    "private_code",
    "sct",
    "dcm",
    "ucum",
]

# ---- private scheme ------------------------------------------------------------------------
PRIVATE_SCHEME = "99CARDIONODE"
#: generate_uid(prefix=None, entropy_srcs=["cardionode-coding-scheme"]) -- fixed, do not change.
PRIVATE_SCHEME_UID = "2.25.7915395850911047161505931727590485005"
PRIVATE_SCHEME_NAME = "CardioNode private codes"


def private_code(value: str, meaning: str) -> Code:
    """A code in the CardioNode private scheme (for concepts without a standard code)."""
    return Code(value, PRIVATE_SCHEME, meaning)


def coding_scheme_item() -> Dataset:
    """CodingSchemeIdentificationSequence item declaring ``99CARDIONODE`` (with its UID)."""
    item = CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME,
        name=PRIVATE_SCHEME_NAME,
        version="1",
        responsible_organization="CardioNode project",
    )
    item.CodingSchemeUID = PRIVATE_SCHEME_UID  # highdicom sets the UID only for registered schemes
    return item


def sct(value: str, meaning: str) -> Code:
    return Code(value, "SCT", meaning)


def dcm(value: str, meaning: str) -> Code:
    return Code(value, "DCM", meaning)


def ucum(value: str, meaning: str) -> Code:
    return Code(value, "UCUM", meaning)


# ---- SNOMED CT: measurements, findings, sites, categories ------------------------------------
CORONARY_ARTERY_CALCIUM_SCORE = sct("450360000", "Coronary artery calcium score")
LEFT_MAIN_CORONARY_ARTERY = sct("3227004", "Left main coronary artery")
LEFT_ANTERIOR_DESCENDING = sct("59438005", "Anterior descending branch of left coronary artery")
LEFT_CIRCUMFLEX = sct("57396003", "Circumflex branch of left coronary artery")
RIGHT_CORONARY_ARTERY = sct("13647002", "Right coronary artery")
POSTERIOR_DESCENDING = sct("53655008", "Posterior descending branch of right coronary artery")
THORACIC_AORTA = sct("113262008", "Thoracic aorta")
AORTIC_VALVE = sct("34202007", "Aortic valve")
MITRAL_VALVE = sct("91134007", "Mitral valve")
HEART = sct("80891009", "Heart")
LEFT_VENTRICLE = sct("87878005", "Left ventricle")
PATHOLOGIC_CALCIFICATION = sct("18115005", "Pathologic calcification")
MYOCARDIUM = sct("74281007", "Myocardium")
SCAR_TISSUE = sct("12402003", "Scar tissue")
EDEMA = sct("79654002", "Edema")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = sct("49755003", "Morphologically abnormal structure")
TISSUE = sct("85756007", "Tissue")
ANATOMICAL_STRUCTURE = sct("123037004", "Anatomical structure")
VOLUME = sct("118565006", "Volume")
YES = sct("373066001", "Yes")
NO = sct("373067005", "No")

# procedures reported
CORONARY_ARTERIOGRAPHY = sct("33367005", "Coronary arteriography")
CT_OF_HEART = sct("241547009", "Computed tomography of heart")
MR_OF_HEART = sct("241620005", "Magnetic resonance imaging of heart")

# ---- DCM -------------------------------------------------------------------------------------
AGATSTON_SCORING_METHOD = dcm("112055", "Agatston scoring method")
VOLUME_SCORING_METHOD = dcm("112056", "Volume scoring method")
MASS_SCORING_METHOD = dcm("112057", "Mass scoring method")
CALCIUM_VOLUME = dcm("122660", "Calcium Volume")
CALCIUM_MASS = dcm("122661", "Calcium Mass")
IMAGING_MEASUREMENT_REPORT = dcm("126000", "Imaging Measurement Report")
ARTIFICIAL_INTELLIGENCE = dcm("123110", "Artificial Intelligence")
COMMENT = dcm("121106", "Comment")
IMAGING_MEASUREMENTS = dcm("126010", "Imaging Measurements")
DERIVED_IMAGING_MEASUREMENTS = dcm("126011", "Derived Imaging Measurements")

# ---- UMLS ----------------------------------------------------------------------------------------
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")  # TID 1500 row 12

# ---- UCUM units --------------------------------------------------------------------------------
MM3 = ucum("mm3", "cubic millimeter")
ML = ucum("mL", "milliliter")
PERCENT = ucum("%", "percent")
MG = ucum("mg", "milligram")
NO_UNITS = ucum("1", "no units")
#: dimensionless scores and counts as UCUM annotations that name what is counted: viewers show the
#: code value next to the number ("129.03 {Agatston}", "27.3 {points}", "3 {cines}")
AGATSTON_UNIT = ucum("{Agatston}", "Agatston units")
POINTS = ucum("{points}", "points")
CINES = ucum("{cines}", "cines")
LESIONS = ucum("{lesions}", "lesions")

# ---- private: SYNTAX and risk categories --------------------------------------------------------
SYNTAX_SCORE = private_code("SYNTAX", "SYNTAX score")
SYNTAX_SCORE_LEFT = private_code("SYNTAX-L", "SYNTAX score, left coronary system")
SYNTAX_SCORE_RIGHT = private_code("SYNTAX-R", "SYNTAX score, right coronary system")
HIGH_SYNTAX_SCORE = private_code("SYNTAX-HIGH", "SYNTAX score above high-risk threshold")
CORONARY_ARTERY_DISEASE_COMPLEXITY = private_code("CAD-COMPLEXITY", "Coronary artery disease anatomical complexity")
CALCIUM_RISK_CATEGORY = private_code("CAC-RISK", "Coronary artery calcium risk category")
#: Agatston-method calcium scores outside the coronary arteries and over all analysed classes:
#: SCT 450360000 is the *coronary* artery calcium score and is used only for coronary classes and
#: the coronary total.
AORTIC_VALVE_CALCIUM_SCORE = private_code("AV-CA-SCORE", "Aortic valve calcium score")
MITRAL_VALVE_CALCIUM_SCORE = private_code("MV-CA-SCORE", "Mitral valve calcium score")
THORACIC_AORTA_CALCIUM_SCORE = private_code("TAO-CA-SCORE", "Thoracic aorta calcium score")
TOTAL_CALCIUM_SCORE = private_code("ALL-CA-SCORE", "Calcium score, coronary arteries, valves and aorta")
LESION_COUNT = private_code("LESION-COUNT", "Number of calcified lesions")
MYOCARDIAL_SCAR_FRACTION = private_code("SCAR-FRACTION", "Scar volume as fraction of myocardial volume")
MYOCARDIAL_EDEMA_FRACTION = private_code("EDEMA-FRACTION", "Edema volume as fraction of myocardial volume")


#: title (CID 7021 is extensible) of a TID 1500 report with no image-located measurement: OHIF 3.13
#: opens a DCM 126000 "Imaging Measurement Report" in its measurement viewport, which fails when
#: nothing can be drawn, and shows any other SR as text -- readable, values and names
MEASUREMENT_REPORT_WITHOUT_REGIONS = private_code("MEAS-REPORT", "Measurement Report")

# ---- private: assessability (pipelines.quality.QualityIssue in the SR) ---------------------------
ASSESSABILITY = private_code("ASSESSABILITY", "Assessability")
NOT_ASSESSABLE = private_code("NOT-ASSESSABLE", "Not assessable")
#: concept of the coded reason; its value is the issue's code with the reason as meaning
NOT_ASSESSABLE_REASON = private_code("NA-REASON", "Reason not assessable")


def risk_category(value: str, meaning: str) -> Code:
    """A risk-category value (e.g. ``risk_category("CAC-0", "No identifiable calcium (0)")``)."""
    return private_code(value, meaning)
