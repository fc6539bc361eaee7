"""MLflow models-from-code entry point of the querylens pyfunc models (`pyfunc.QuerylensModel`)."""

from mlflow.models import set_model

from querylens.tracking.pyfunc import QuerylensModel

set_model(QuerylensModel())
